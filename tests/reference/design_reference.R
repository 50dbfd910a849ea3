# Reference values for the survey design engine (analysis/stats/design.py), from R's survey
# package. Writes design_reference.csv: name, k (index within a result), estimate,
# std_error, extra (a third number where a result has one: a CI limit, df or p-value).
#
# Inputs: the api data (tests/reference/api/, survey's data(api)) and design_data.csv.gz,
# the bundled synthetic study as the package's cleaner writes it (see refresh_m1.py).
# Population counts below come from apipop (survey's data(api)): stype E 4421, H 755,
# M 1018; sch.wide No 1072, Yes 5122; sum of api99 3914069; 6194 schools.
#
# Run from the project root:  Rscript tests/reference/design_reference.R
# Produced with R 4.2.2 and survey 4.1.1 (Debian r-base-core, r-cran-survey).
suppressPackageStartupMessages(library(survey))
here <- "tests/reference"
apistrat <- read.csv(file.path(here, "api/apistrat.csv"))
apiclus1 <- read.csv(file.path(here, "api/apiclus1.csv"))
apiclus2 <- read.csv(file.path(here, "api/apiclus2.csv"))
rows <- list()
add <- function(name, est, se, extra = NA) {
  rows[[length(rows) + 1]] <<- data.frame(name = name, k = seq_along(est), estimate = as.vector(est),
                                          std_error = as.vector(se), extra = as.vector(extra))
}
dstrat <- svydesign(id = ~1, strata = ~stype, weights = ~pw, data = apistrat, fpc = ~fpc)
dclus1 <- svydesign(id = ~dnum, weights = ~pw, data = apiclus1, fpc = ~fpc)
dclus2 <- svydesign(id = ~dnum + snum, fpc = ~fpc1 + fpc2, data = apiclus2)

m <- svymean(~api00, dclus2); add("dclus2 mean api00", coef(m), SE(m))
m <- svytotal(~enroll, dclus2, na.rm = TRUE); add("dclus2 total enroll", coef(m), SE(m))
m <- svymean(~api00, as.svrepdesign(dclus1, type = "JK1")); add("dclus1 JK1 mean api00", coef(m), SE(m))
m <- svytotal(~enroll, as.svrepdesign(dclus1, type = "JK1")); add("dclus1 JK1 total enroll", coef(m), SE(m))
m <- svymean(~api00, as.svrepdesign(dstrat, type = "JKn")); add("dstrat JKn mean api00", coef(m), SE(m))

# BRR and Fay on a paired design: apistrat in 100 strata of two schools
paired <- apistrat[order(apistrat$stype, apistrat$snum), ]
paired$pair <- rep(1:100, each = 2)
dpair <- svydesign(id = ~1, strata = ~pair, weights = ~pw, data = paired)
m <- svytotal(~enroll, as.svrepdesign(dpair, type = "BRR")); add("paired BRR total enroll", coef(m), SE(m))
m <- svytotal(~enroll, as.svrepdesign(dpair, type = "Fay", fay.rho = 0.5)); add("paired Fay total enroll", coef(m), SE(m))
m <- svytotal(~enroll, dpair); add("paired Taylor total enroll", coef(m), SE(m))

pop.types <- data.frame(stype = c("E", "H", "M"), Freq = c(4421, 755, 1018))
pop.schwide <- data.frame(sch.wide = c("No", "Yes"), Freq = c(1072, 5122))
ps <- postStratify(dclus1, ~stype, pop.types)
m <- svymean(~api00, ps); add("dclus1 poststratify mean api00", coef(m), SE(m))
m <- svytotal(~enroll, ps); add("dclus1 poststratify total enroll", coef(m), SE(m))
rk <- rake(dclus1, list(~stype, ~sch.wide), list(pop.types, pop.schwide),
           control = list(maxit = 200, epsilon = 1e-13))
m <- svymean(~api00, rk); add("dclus1 rake mean api00", coef(m), SE(m))
m <- svytotal(~enroll, rk); add("dclus1 rake total enroll", coef(m), SE(m))
cal <- calibrate(dclus1, ~stype + api99, population = c(`(Intercept)` = 6194, stypeH = 755,
                                                         stypeM = 1018, api99 = 3914069))
m <- svymean(~api00, cal); add("dclus1 calibrate mean api00", coef(m), SE(m))
m <- svytotal(~enroll, cal); add("dclus1 calibrate total enroll", coef(m), SE(m))

b <- svyby(~api00, ~stype, dclus1, svymean, deff = TRUE)
add("dclus1 svyby mean api00 by stype", coef(b), SE(b), deff(b))
b <- svyby(~enroll, ~stype, dclus1, svytotal)
add("dclus1 svyby total enroll by stype", coef(b), SE(b))
m <- svymean(~api00, dclus1, deff = TRUE); add("dclus1 mean api00 deff", coef(m), SE(m), deff(m))
m <- svymean(~stype, dclus1, deff = TRUE); add("dclus1 proportion stype", coef(m), SE(m), deff(m))
m <- svytotal(~enroll, dclus1, deff = TRUE, na.rm = TRUE); add("dclus1 total enroll deff", coef(m), SE(m), deff(m))
m <- svyratio(~api.stu, ~enroll, dclus1); add("dclus1 ratio api.stu/enroll", coef(m), SE(m))
q <- svyquantile(~api00, dclus1, 0.5, ci = TRUE)$api00
add("dclus1 quantile api00 0.5", q[1, "quantile"], q[1, "se"], q[1, 2])
q <- svyquantile(~api00, dstrat, 0.25, ci = TRUE)$api00
add("dstrat quantile api00 0.25", q[1, "quantile"], q[1, "se"], q[1, 2])
t <- svychisq(~sch.wide + stype, dclus1)
add("dclus1 chisq sch.wide stype", t$statistic, t$p.value, t$parameter)
g <- svyglm(api00 ~ ell + meals + mobility, design = dstrat)
rt <- regTermTest(g, ~ ell + meals)
add("dstrat regTermTest ell+meals", rt$Ftest, rt$p, c(rt$df, rt$ddf))

# Lonely PSUs: apistrat with a single school left in stratum H
lonely <- apistrat[-which(apistrat$stype == "H")[-1], ]
for (policy in c("certainty", "remove", "adjust", "average")) {
  options(survey.lonely.psu = policy)
  dl <- svydesign(id = ~1, strata = ~stype, weights = ~pw, data = lonely, fpc = ~fpc)
  m <- svymean(~api00, dl); add(paste("lonely", policy, "mean api00"), coef(m), SE(m))
}
options(survey.lonely.psu = "fail")

# The bundled synthetic study
teachers <- read.csv(gzfile(file.path(here, "design_data.csv.gz")),
                     colClasses = c(district_id = "character", school_id = "character"))
teachers$support_model <- factor(teachers$support_model,
                                 levels = c("pay_and_pray", "tech_support_only", "vanguard",
                                            "consultant", "director", "coaching", "other"))
teachers$samr_level <- factor(teachers$samr_level, levels = c("S", "A", "M", "R"))
study <- svydesign(ids = ~district_id, strata = ~stratum, fpc = ~fpc_districts,
                   weights = ~weight, data = teachers)
b <- svyby(~non_substitutive, ~support_model, study, svymean, na.rm = TRUE, deff = TRUE)
add("study mean non_substitutive by support_model", coef(b), SE(b), deff(b))
m <- svytotal(~non_substitutive, study, na.rm = TRUE); add("study total non_substitutive", coef(m), SE(m))
m <- svymean(~frl_pct, study, deff = TRUE); add("study mean frl_pct", coef(m), SE(m), deff(m))
t <- svychisq(~support_model + samr_level, study)
add("study chisq support_model samr_level", t$statistic, t$p.value, t$parameter)
m <- svymean(~non_substitutive, as.svrepdesign(study, type = "JKn"), na.rm = TRUE)
add("study JKn mean non_substitutive", coef(m), SE(m))

write.csv(do.call(rbind, rows), file.path(here, "design_reference.csv"), row.names = FALSE)
