# Reference values for the cluster-robust GLMs (analysis/stats/robust.py), from R's
# sandwich and clubSandwich packages.
#
# M1's formula (the codebook's main model) fitted to the bundled synthetic study
# without weights (binomial) and with the final teacher weights (quasibinomial: the
# same estimates, no warning about non-integer successes), and the same right-hand
# side as a linear probability model (gaussian glm, unweighted and weighted), all
# clustered by district.
# For each fit and coefficient: the estimate, the CR1 standard error
# (sandwich::vcovCL(type = "HC1"): G/(G-1) (n-1)/(n-p)), the CR2 standard error
# (clubSandwich::vcovCR(type = "CR2")) and its Satterthwaite degrees of freedom
# (clubSandwich::coef_test(test = "Satterthwaite")). Then the average marginal
# effects of each support model against tech_support_only (weighted mean of the
# predicted probabilities when the fit is weighted) with delta-method SEs from the
# CR1 and CR2 covariances, and the CR2 Satterthwaite df of the linearised contrast
# (clubSandwich::linear_contrast).
#
# Input: m1_data.csv.gz (written by refresh_m1.py from the package's cleaner).
# Run from the project root:  Rscript tests/reference/robust_reference.R
# (or .venv/bin/python tests/reference/refresh_robust.py).
# Produced with R 4.2.2, sandwich 3.0.2, clubSandwich 0.5.8 (Debian r-cran-* packages).
suppressPackageStartupMessages({library(sandwich); library(clubSandwich)})
here <- "tests/reference"
teachers <- read.csv(gzfile(file.path(here, "m1_data.csv.gz")),
                     colClasses = c(district_id = "character", response_id = "character"))
models <- c("pay_and_pray", "tech_support_only", "vanguard", "consultant", "director", "coaching")
teachers$support_model <- factor(teachers$support_model, levels = models)
teachers$locale <- factor(teachers$locale, levels = c("city", "suburb", "town", "rural"))
teachers$grade_band <- factor(teachers$grade_band, levels = c("elementary", "middle", "high", "multiple"))
teachers$subject <- factor(teachers$subject, levels = c("ela", "math", "science", "social_studies",
                                                        "arts", "cte", "special_ed", "other"))
f <- non_substitutive ~ relevel(support_model, "tech_support_only") + frl_pct + log(enrollment) +
  relevel(locale, "suburb") + I(tech_spend_pp / 100) + students_per_device + years_teaching +
  relevel(grade_band, "elementary") + relevel(subject, "ela")
vars <- c("non_substitutive", "support_model", "frl_pct", "enrollment", "locale", "tech_spend_pp",
          "students_per_device", "years_teaching", "grade_band", "subject", "district_id", "weight")
cc <- teachers[complete.cases(teachers[, vars]), ]

fits <- list(
  unweighted = glm(f, data = cc, family = binomial()),
  weighted = glm(f, data = cc, family = quasibinomial(), weights = weight),
  gaussian_unweighted = glm(f, data = cc, family = gaussian()),
  gaussian_weighted = glm(f, data = cc, family = gaussian(), weights = weight)
)
coef_rows <- list(); ame_rows <- list()
for (name in names(fits)) {
  fit <- fits[[name]]
  v1 <- vcovCL(fit, cluster = ~district_id, type = "HC1")
  v2 <- vcovCR(fit, cluster = cc$district_id, type = "CR2")
  ct <- coef_test(fit, vcov = v2, test = "Satterthwaite")
  coef_rows[[name]] <- data.frame(fit = name, term = names(coef(fit)), estimate = coef(fit),
                                  se_cr1 = sqrt(diag(v1)), se_cr2 = sqrt(diag(as.matrix(v2))),
                                  df_cr2 = ct$df_Satt, n = nrow(cc),
                                  clusters = length(unique(cc$district_id)))
  # AMEs: g-computation with the fit's weights, gradient for the delta method.
  w <- if (grepl("weighted", name) && !grepl("unweighted", name)) cc$weight else rep(1, nrow(cc))
  w <- w / sum(w)
  rates <- numeric(length(models)); grads <- matrix(0, length(models), length(coef(fit)))
  for (j in seq_along(models)) {
    cf <- cc
    cf$support_model <- factor(rep(models[j], nrow(cf)), levels = models)
    X <- model.matrix(delete.response(terms(fit)), cf)
    eta <- drop(X %*% coef(fit))
    rates[j] <- sum(w * fit$family$linkinv(eta))
    grads[j, ] <- colSums(w * fit$family$mu.eta(eta) * X)
  }
  ref <- which(models == "tech_support_only")
  D <- grads[-ref, , drop = FALSE] - matrix(grads[ref, ], length(models) - 1, ncol(grads),
                                            byrow = TRUE)
  colnames(D) <- names(coef(fit))
  lc <- linear_contrast(fit, vcov = v2, contrasts = D, test = "Satterthwaite")
  ame_rows[[name]] <- data.frame(fit = name, support_model = models[-ref],
                                 estimate = rates[-ref] - rates[ref],
                                 se_cr1 = sqrt(diag(D %*% v1 %*% t(D))),
                                 se_cr2 = sqrt(diag(D %*% as.matrix(v2) %*% t(D))),
                                 df_cr2 = lc$df)
}
options(digits = 15)
write.csv(do.call(rbind, coef_rows), file.path(here, "robust_reference.csv"), row.names = FALSE)
write.csv(do.call(rbind, ame_rows), file.path(here, "robust_ame_reference.csv"), row.names = FALSE)
