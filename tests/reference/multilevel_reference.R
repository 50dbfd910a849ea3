# Reference values for the three-level random-intercept logit of M1's outcome and
# covariates on the bundled synthetic study, from R's lme4 (Laplace, nAGQ = 1).
#
# Produces multilevel_reference.csv: fixed effects and their SEs (2 x the inverse of
# lme4's finite-difference Hessian of the Laplace deviance over (theta, beta), as
# vcov.merMod does), the SDs of the district and school-within-district random
# intercepts, the log-likelihood, the counts (teachers, schools, districts), the
# largest absolute deviance gradient at the stored optimum (`max_abs_gradient`) and
# glmer's own log-likelihood before polishing (`glmer_logLik`). Input:
# multilevel_data.csv.gz, written by refresh_multilevel.py from the package's cleaner
# on the bundled data/raw.
#
# glmer's optimum is not tight enough for the tests (minqa's bobyqa with rhoend 1e-10
# ran for over 20 minutes without finishing; nlminb's steps fail PIRLS; nloptr's BOBYQA
# at tight tolerances stops at deviance gradients of 0.01-0.1), so it is polished by
# Newton steps on lme4's own deviance function, with lme4's finite-difference
# derivatives, until the deviance stops decreasing (gradient about 1e-6).
#
# Run from the project root:  Rscript tests/reference/multilevel_reference.R
# Produced with R 4.2.2 and lme4 1.1.31 (Debian packages r-base-core, r-cran-lme4).
suppressPackageStartupMessages(library(lme4))
options(digits = 15)
here <- "tests/reference"
teachers <- read.csv(gzfile(file.path(here, "multilevel_data.csv.gz")),
                     colClasses = c(district_id = "character", school_id = "character",
                                    response_id = "character"))
models <- c("pay_and_pray", "tech_support_only", "vanguard", "consultant", "director", "coaching")
teachers$support_model <- factor(teachers$support_model, levels = models)
teachers$locale <- factor(teachers$locale, levels = c("city", "suburb", "town", "rural"))
teachers$grade_band <- factor(teachers$grade_band, levels = c("elementary", "middle", "high", "multiple"))
teachers$subject <- factor(teachers$subject, levels = c("ela", "math", "science", "social_studies",
                                                        "arts", "cte", "special_ed", "other"))
f <- non_substitutive ~ relevel(support_model, "tech_support_only") + frl_pct + log(enrollment) +
  relevel(locale, "suburb") + I(tech_spend_pp / 100) + students_per_device + years_teaching +
  relevel(grade_band, "elementary") + relevel(subject, "ela") +
  (1 | district_id) + (1 | district_id:school_id)
ctrl <- glmerControl(optimizer = "nloptwrap", tolPwrss = 1e-12,
                     optCtrl = list(ftol_abs = 1e-12, ftol_rel = 1e-15, xtol_rel = 1e-10,
                                    maxeval = 1e6))
fit <- glmer(f, data = teachers, family = binomial, nAGQ = 1, control = ctrl)

# Newton steps on lme4's own Laplace deviance (parameters c(theta, beta), theta = the
# two SDs), with lme4's finite-difference gradient and Hessian (lme4:::deriv12), from
# glmer's optimum until the step is negligible.
devfun <- update(fit, devFunOnly = TRUE)
ntheta <- length(getME(fit, "theta"))
par <- c(getME(fit, "theta"), fixef(fit))
dev <- devfun(par)
for (i in 1:10) {
  d <- lme4:::deriv12(devfun, par)
  step <- solve(d$Hessian, d$gradient)
  new_dev <- devfun(par - step)
  cat(sprintf("Newton %d: deviance %.10f -> %.10f, max |gradient| %.3g, max |step| %.3g\n",
              i, dev, new_dev, max(abs(d$gradient)), max(abs(step))))
  if (new_dev > dev) break
  par <- par - step
  dev <- new_dev
  if (max(abs(step)) < 1e-9) break
}
d <- lme4:::deriv12(devfun, par)
dev <- devfun(par)
vc <- 2 * solve(d$Hessian)              # as vcov.merMod: inverse Hessian of deviance / 2
beta <- par[-seq_len(ntheta)]
se <- sqrt(diag(vc))[-seq_len(ntheta)]
out <- data.frame(
  term = c(names(fixef(fit)), "sd(Intercept | district_id)",
           "sd(Intercept | district_id:school_id)", "logLik", "n", "n_schools", "n_districts",
           "max_abs_gradient", "glmer_logLik"),
  estimate = c(beta, par[names(par) == "district_id.(Intercept)"],
               par[names(par) == "district_id:school_id.(Intercept)"], -dev / 2, nobs(fit),
               ngrps(fit)[["district_id:school_id"]], ngrps(fit)[["district_id"]],
               max(abs(d$gradient)), as.numeric(logLik(fit))),
  std_error = c(se, NA, NA, NA, NA, NA, NA, NA, NA))
write.csv(out, file.path(here, "multilevel_reference.csv"), row.names = FALSE)
print(out)
print(names(par))
