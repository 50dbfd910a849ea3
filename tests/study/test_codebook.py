"""The codebook encodes instrument.md, all of it, and nothing else hard-codes it.

The instrument is parsed here from a verbatim copy (tests/reference/instrument.md),
independently of codebook.yaml.
"""

import ast
import re
from pathlib import Path

import pytest
from helpers import REFERENCE, ROOT

from analysis.study.codebook import load_codebook

INSTRUMENT = (REFERENCE / "instrument.md").read_text(encoding="utf-8")
cb = load_codebook()


def _section(title_start: str, next_title: str) -> str:
    start = INSTRUMENT.index(title_start)
    end = INSTRUMENT.index(next_title, start)
    return INSTRUMENT[start:end]


def _table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|- "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.append(cells)
    return rows[1:]  # without the header row


def _code(cell: str) -> str:
    return cell.strip("`")


# -- section 1 -------------------------------------------------------------
SUPPORT_ROWS = _table_rows(_section("## 1. The six", "`tech_support_only` is the reference"))


def test_six_support_models_with_labels_short_names_and_grades():
    assert len(SUPPORT_ROWS) == 6
    models = {m["code"]: m for m in cb.support_models()}
    for code, label, short, grade in SUPPORT_ROWS:
        m = models[_code(code)]
        assert (m["label"], m["short"], m["grade"]) == (label, short, grade)
    # grade order F < C- < ... < A+ is the codebook's order
    assert [m["grade"] for m in cb.support_models()] == [r[3] for r in SUPPORT_ROWS]


def test_reference_model_and_other_label():
    assert cb.reference_model == "tech_support_only"
    assert "`Other (please specify)`" in INSTRUMENT
    assert cb.other_model_label == "Other (please specify)"


# -- section 2 -------------------------------------------------------------
DISTRICT = _section("## 2. District survey", "## 3. Teacher survey")
DISTRICT_ROWS = _table_rows(DISTRICT)


def test_district_headers_in_order():
    headers = [c.header for c in cb.columns("district_survey")]
    expected = []
    for _variable, header, _ in DISTRICT_ROWS:
        if header.startswith("D10_1") or header.startswith("D11_1"):
            continue
        expected.append(header)
    expected_no_scales = [h for h in headers if not re.match(r"D1[01]_\d", h)]
    assert expected_no_scales == expected
    assert headers[:2] == ["Timestamp", "Email Address"]


def test_district_variables():
    variables = {c.header: c.variable for c in cb.columns("district_survey")}
    for variable, header, _ in DISTRICT_ROWS:
        v = _code(variable)
        if v in ("PII", "components") or ".." in v:
            continue
        if header == "D4. Student enrollment":
            # documented rename: the frame's enrollment keeps the name `enrollment`
            assert variables[header] == "enrollment_reported"
            continue
        assert variables[header] == v, header


@pytest.mark.parametrize("block,construct,n", [("D10", "it_control", 3), ("D11", "vision", 4)])
def test_scale_statements_and_reverse_coding(block, construct, n):
    para = DISTRICT[DISTRICT.index(f"{block} ("):]
    para = para[: para.index(".\n") + 1] if block == "D10" else para[: para.index("For D10")]
    statements = re.findall(r'(\d) "([^"]+)"', " ".join(para.split()))
    assert len(statements) == n
    items = cb.construct_items(construct)
    for (k, text), col in zip(statements, items, strict=True):
        assert col.header == f"{block}_{k}. {text}"
        assert col.variable == f"{construct}_{k}"
    reverse = {c.variable for c in items if c.reverse}
    assert reverse == ({"it_control_2"} if block == "D10" else set())


def test_agreement_scale():
    found = re.findall(r"(Strongly disagree|Disagree|Neither agree nor\s+disagree|Agree|"
                       r"Strongly agree) \((\d)\)", DISTRICT)
    expected = {re.sub(r"\s+", " ", label): int(v) for label, v in found}
    assert cb.scale("agreement") == expected


def test_district_choice_lists():
    rows = {_code(r[0]): r[2] for r in DISTRICT_ROWS}
    assert cb.scale_labels("respondent_role") == rows["respondent_role"].split("; ")
    assert cb.scale_labels("yes_no_not_sure") == rows["position_cut"].split("; ")
    components = rows["components"].split("subset of: ")[1].split("; ")
    assert [c["label"] for c in cb.support_components()] == components


# -- section 3 -------------------------------------------------------------
TEACHER = _section("## 3. Teacher survey", "### Outcomes")
TEACHER_ROWS = _table_rows(TEACHER)


def test_teacher_metadata_columns_in_order():
    listed = TEACHER[TEACHER.index("metadata columns come first:"):TEACHER.index("Embedded")]
    names = re.findall(r"[A-Z][A-Za-z]+(?: \(in seconds\))?", listed.split(":", 1)[1])
    headers = [c.header for c in cb.columns("teacher_survey")]
    assert headers[: len(names)] == names
    assert headers[len(names): len(names) + 2] == ["district_id", "school_id"]


def test_teacher_questions():
    by_header = {c.header: c for c in cb.columns("teacher_survey")}
    for variable, column, _values in TEACHER_ROWS:
        v = _code(variable)
        for header in re.findall(r"T\d+(?:_\d+)?", column):
            assert header in by_header, header
        if re.fullmatch(r"[a-z_]+", v) and re.fullmatch(r"T\d+(?:_\d+)?", column):
            assert by_header[column].variable == v
    assert by_header["T9_5"].attention_check == "Agree"
    for header in ("T13",):
        assert by_header[header].pii
    for meta in ("IPAddress", "RecipientLastName", "RecipientFirstName", "RecipientEmail",
                 "LocationLatitude", "LocationLongitude"):
        assert by_header[meta].pii


def test_teacher_choice_lists():
    rows = {_code(r[0]): r[2] for r in TEACHER_ROWS}
    assert cb.scale_labels("grade_band") == rows["grade_band"].split("; ")
    assert cb.scale_labels("subject") == rows["subject"].split("; ")
    assert cb.scale_labels("use_freq") == rows["use_freq"].split("; ")
    samr_row = next(r for r in TEACHER_ROWS if r[0] == "SAMR items")
    freq = dict((label, int(v)) for label, v in re.findall(r"([A-Z][a-z ]+) \((\d)\)", samr_row[2]))
    assert cb.scale("frequency") == {k.strip(): v for k, v in freq.items()}


def test_samr_items_and_tags():
    block = TEACHER[TEACHER.index("T6 (\"In a typical"):TEACHER.index("T7 (")]
    block = " ".join(block.split())
    items = re.findall(r"(?:^|[;:]) ?(\d) ([^;]+?) \(([SAMR])\)", block)
    assert len(items) == 8
    for k, text, tag in items:
        col = cb.column("teacher_survey", f"samr_freq_{k}")
        assert col.header == f"T6_{k}"
        assert col.samr == tag
        assert col.question.endswith(" - " + " ".join(text.split()))


def test_t7_statements_and_levels():
    block = TEACHER[TEACHER.index("T7 (\"Which"):TEACHER.index("T9: 1")]
    found = re.findall(r"(Technology [^;.]+?) \(([SAMR])\)", " ".join(block.split()))
    assert cb.scale("samr_self") == {text: tag for text, tag in found}


@pytest.mark.parametrize("block,construct,n", [("T9", "support_quality", 4),
                                               ("T10", "self_efficacy", 3)])
def test_t9_t10_statements(block, construct, n):
    para = " ".join(TEACHER[TEACHER.index(f"{block}: 1"):].split())
    para = para[: para.index("T10:") if block == "T9" else para.index("### ") + 0
                if "### " in para else len(para)]
    statements = re.findall(r'(\d) "([^"]+)"', para)[:n]
    items = cb.construct_items(construct)
    assert [c.question for c in items] == [t for _, t in statements]
    assert [c.header for c in items] == [f"{block}_{k}" for k, _ in statements]


# -- section 6 -------------------------------------------------------------
def test_processed_codes():
    sec = " ".join(_section("## 6. The processed", "The main model").split())
    assert cb.scale_values("locale") == ["city", "suburb", "town", "rural"]
    assert "`locale` city, suburb, town, rural" in sec
    assert "`grade_band` elementary, middle, high, multiple" in sec
    subjects = sec.split("`subject` ")[1].split(";")[0].split(", ")
    assert cb.scale_values("subject") == subjects
    assert cb.samr_levels == ["S", "A", "M", "R"]


def test_m1_formula_is_the_instruments():
    block = INSTRUMENT[INSTRUMENT.index("```\nnon_substitutive"):]
    block = block[4: block.index("```", 4)]
    assert cb.model_formula("M1") == " ".join(block.split())


# -- nothing else hard-codes the instrument ----------------------------------
def _forbidden_literals() -> set[str]:
    out = set()
    for m in cb.support_models():
        out |= {m["code"], m["label"], m["short"]}
    for c in cb.support_components():
        out |= {c["code"], c["label"]}
    for _scale, items in cb.raw["scales"].items():
        for item in items:
            if len(item["label"]) >= 8:
                out.add(item["label"])
            if isinstance(item["value"], str) and len(item["value"]) >= 4 and \
                    item["value"] != "other":
                out.add(item["value"])
    for source in ("district_survey", "teacher_survey"):
        for col in cb.columns(source):
            if col.header != col.variable:
                out.add(col.header)
            if col.question and col.header[:1] == "T" and col.header[1:2].isdigit():
                out.add(col.question)
    return out


def _string_literals(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module | ast.AsyncFunctionDef):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_module_hard_codes_instrument_labels_or_codes():
    forbidden = _forbidden_literals()
    assert "coaching" in forbidden and "T6_1" in forbidden and "Strongly disagree" in forbidden
    offences = []
    for path in sorted((ROOT / "analysis").rglob("*.py")):
        for line, value in _string_literals(path):
            if value in forbidden or re.fullmatch(r"[TD]\d+(_\d+)?", value):
                offences.append(f"{path.relative_to(ROOT)}:{line}: {value!r}")
    assert offences == []


def test_codebook_loader_is_cached_and_hashed():
    assert load_codebook() is cb
    assert len(cb.sha256) == 64
