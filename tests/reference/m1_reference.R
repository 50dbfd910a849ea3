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
cc <- !is.na(teachers$non_substitutive) & !is.na(teachers$support_model) &
  !is.na(teachers$years_teaching) & !is.na(teachers$grade_band) & !is.na(teachers$subject)
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
