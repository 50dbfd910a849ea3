# Reference values for M1 on the bundled synthetic study, from R's survey package.
#
# Produces m1_reference.csv (coefficients and standard errors of svyglm) and
# m1_ame_reference.csv (average marginal effects of each support model against
# tech_support_only, with design-based delta-method SEs computed with
# survey::svyrecvar). Input: m1_data.csv.gz, the model variables of
# data/processed/teachers.parquet as written by the package's cleaner from the
# bundled data/raw (tests check that the cleaner still reproduces it).
#
# Run from the project root:  Rscript tests/reference/m1_reference.R
# Produced with R 4.2.2 and survey 4.1.1 (Debian packages r-base-core, r-cran-survey).
suppressPackageStartupMessages(library(survey))
options(digits = 15)
here <- "tests/reference"
teachers <- read.csv(gzfile(file.path(here, "m1_data.csv.gz")),
                     colClasses = c(district_id = "character", response_id = "character"))
models <- c("pay_and_pray", "tech_support_only", "vanguard", "consultant", "director", "coaching")
teachers$support_model <- factor(teachers$support_model, levels = models)
teachers$locale <- factor(teachers$locale, levels = c("city", "suburb", "town", "rural"))
teachers$grade_band <- factor(teachers$grade_band, levels = c("elementary", "middle", "high", "multiple"))
teachers$subject <- factor(teachers$subject, levels = c("ela", "math", "science", "social_studies",
                                                        "arts", "cte", "special_ed", "other"))
design <- svydesign(ids = ~district_id, strata = ~stratum, fpc = ~fpc_districts,
                    weights = ~weight, data = teachers)
f <- non_substitutive ~ relevel(support_model, "tech_support_only") + frl_pct + log(enrollment) +
  relevel(locale, "suburb") + I(tech_spend_pp / 100) + students_per_device + years_teaching +
  relevel(grade_band, "elementary") + relevel(subject, "ela")
fit <- svyglm(f, design = design, family = quasibinomial())
s <- summary(fit)$coefficients
out <- data.frame(term = rownames(s), estimate = s[, 1], std_error = s[, 2],
                  p_value = s[, 4], df_residual = fit$df.residual)
write.csv(out, file.path(here, "m1_reference.csv"), row.names = FALSE)

# Average marginal effects (g-computation) with the unconditional design-based
# delta method: influence = w (p_m - rate_m) / W + (beta influence) %*% gradient.
cc <- complete.cases(teachers[, all.vars(f)])   # the rows svyglm used (every model variable)
w <- weights(design)
infl_beta <- matrix(0, nrow(teachers), length(coef(fit)))
X <- model.matrix(fit)
estfun <- X * resid(fit, "working") * fit$weights
infl_beta[cc, ] <- estfun %*% summary.glm(fit)$cov.unscaled  # the glm bread, as svy.varcoef
rates <- numeric(length(models)); infl <- matrix(0, nrow(teachers), length(models))
W <- sum(w[cc])
for (j in seq_along(models)) {
  cf <- teachers[cc, ]
  cf$support_model <- factor(rep(models[j], nrow(cf)), levels = models)
  Xm <- model.matrix(delete.response(terms(fit)), cf)
  eta <- drop(Xm %*% coef(fit)); p <- plogis(eta)
  rates[j] <- sum(w[cc] * p) / W
  grad <- colSums(w[cc] * p * (1 - p) * Xm) / W
  infl[cc, j] <- w[cc] * (p - rates[j]) / W
  infl[, j] <- infl[, j] + infl_beta %*% grad
}
ref <- which(models == "tech_support_only")
d_infl <- infl[, -ref] - infl[, ref]
v <- svyrecvar(d_infl, design$cluster, design$strata, design$fpc, postStrata = NULL)
ame <- data.frame(support_model = models[-ref], estimate = rates[-ref] - rates[ref],
                  std_error = sqrt(diag(v)))
write.csv(ame, file.path(here, "m1_ame_reference.csv"), row.names = FALSE)

# Models M2-M8 of analysis/stats/hypotheses.yaml (other outcomes; moderation models).
# Moderators as the hypotheses file defines them: z-scores across responding districts,
# log2(campuses per director / 8) with 0 where there is no director, position cut = "yes".
districts <- teachers[!duplicated(teachers$district_id), ]
z <- function(col) (teachers[[col]] - mean(districts[[col]], na.rm = TRUE)) /
  sd(districts[[col]], na.rm = TRUE)
teachers$it_control_z <- z("it_control")
teachers$vision_z <- z("vision")
teachers$role_fidelity_z <- z("role_fidelity")
teachers$log2_cpd <- ifelse(is.na(teachers$campuses_per_director), 0,
                            log2(teachers$campuses_per_director / 8))
teachers$position_cut_yes <- ifelse(is.na(teachers$position_cut), NA,
                                    as.numeric(teachers$position_cut == "yes"))

design <- svydesign(ids = ~district_id, strata = ~stratum, fpc = ~fpc_districts,
                    weights = ~weight, data = teachers)
rhs <- "relevel(support_model, 'tech_support_only') + frl_pct + log(enrollment) +
  relevel(locale, 'suburb') + I(tech_spend_pp / 100) + students_per_device + years_teaching +
  relevel(grade_band, 'elementary') + relevel(subject, 'ela')"
is_m <- function(m, x) sprintf("I((support_model == '%s') * %s)", m, x)
extra <- list(
  M2 = c("transformative", "quasibinomial", ""),
  M3 = c("nonsub_share", "quasibinomial", ""),
  M4 = c("samr_index", "gaussian", ""),
  M5 = c("non_substitutive", "quasibinomial", paste("+", is_m("director", "log2_cpd"))),
  M6 = c("non_substitutive", "quasibinomial",
         paste("+ it_control_z +", is_m("director", "it_control_z"), "+",
               is_m("coaching", "it_control_z"))),
  M7 = c("non_substitutive", "quasibinomial",
         paste("+ vision_z +", paste(sapply(c("pay_and_pray", "vanguard", "consultant",
                                                "director", "coaching"),
                                              function(m) is_m(m, "vision_z")),
                                       collapse = " + "))),
  M8 = c("non_substitutive", "quasibinomial",
         paste("+ role_fidelity_z + position_cut_yes +", is_m("coaching", "role_fidelity_z"),
               "+", is_m("coaching", "position_cut_yes"))))
all <- list()
for (name in names(extra)) {
  e <- extra[[name]]
  fam <- if (e[2] == "gaussian") gaussian() else quasibinomial()
  g <- svyglm(as.formula(paste(e[1], "~", rhs, e[3])), design = design, family = fam)
  s <- summary(g)$coefficients
  all[[name]] <- data.frame(model = name, term = rownames(s), estimate = s[, 1],
                            std_error = s[, 2], df_residual = g$df.residual)
}
write.csv(do.call(rbind, all), file.path(here, "models_reference.csv"), row.names = FALSE)
