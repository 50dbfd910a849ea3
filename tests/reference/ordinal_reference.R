# Reference values for the design-based proportional-odds model (analysis/stats/ordinal.py),
# from R's survey package (svyolr).
#
# 1. The bundled synthetic study: svyolr(samr_level ~ <M1's right-hand side>) on the
#    study design (strata, district PSUs, FPC, teacher weights), input
#    ordinal_data.csv.gz written by refresh_ordinal.py from the package's cleaner.
# 2. The api example of api_reference.R: svyolr(api_cat ~ meals + ell) on dclus1,
#    api_cat = cut(api00, c(0, 500, 650, 800, 1000)), input api/apiclus1.csv.
#
# Each model is fitted twice: with svyolr's defaults ("default": optim's BFGS stops
# at a relative change of 1e-8 in the objective) and with a tight tolerance
# ("tight": control = list(reltol = 1e-15, maxit = 5000)), which brings the
# estimates to the maximum likelihood solution. Standard errors are svyolr's: the
# Hessian is optim's finite-difference one.
#
# 3. Average marginal effects of each support model against tech_support_only on
#    P(samr_level >= A) and P(samr_level >= M) for the tight study fit: g-computation
#    with the design-based delta method (influence = w (p - P) / W + beta influence
#    %*% gradient, beta influence = score %*% solve(fit$Hessian), as svyolr's own
#    variance), variance by svyrecvar.
#
# Run from the project root:  Rscript tests/reference/ordinal_reference.R
# Produced with R 4.2.2 and survey 4.1.1 (Debian packages r-base-core, r-cran-survey).
suppressPackageStartupMessages(library(survey))
here <- "tests/reference"
tight <- list(reltol = 1e-15, maxit = 5000)

teachers <- read.csv(gzfile(file.path(here, "ordinal_data.csv.gz")),
                     colClasses = c(district_id = "character", response_id = "character"))
models <- c("pay_and_pray", "tech_support_only", "vanguard", "consultant", "director", "coaching")
teachers$samr_level <- factor(teachers$samr_level, levels = c("S", "A", "M", "R"))
teachers$support_model <- factor(teachers$support_model, levels = models)
teachers$locale <- factor(teachers$locale, levels = c("city", "suburb", "town", "rural"))
teachers$grade_band <- factor(teachers$grade_band, levels = c("elementary", "middle", "high", "multiple"))
teachers$subject <- factor(teachers$subject, levels = c("ela", "math", "science", "social_studies",
                                                        "arts", "cte", "special_ed", "other"))
design <- svydesign(ids = ~district_id, strata = ~stratum, fpc = ~fpc_districts,
                    weights = ~weight, data = teachers)
f <- samr_level ~ relevel(support_model, "tech_support_only") + frl_pct + log(enrollment) +
  relevel(locale, "suburb") + I(tech_spend_pp / 100) + students_per_device + years_teaching +
  relevel(grade_band, "elementary") + relevel(subject, "ela")

api <- read.csv(file.path(here, "api", "apiclus1.csv"))
api$api_cat <- cut(api$api00, c(0, 500, 650, 800, 1000))
dclus1 <- svydesign(id = ~dnum, weights = ~pw, data = api, fpc = ~fpc)

rows <- list()
fits <- list()
for (fit_name in c("default", "tight")) {
  ctrl <- if (fit_name == "tight") list(control = tight) else list()
  study <- do.call(svyolr, c(list(f, design = design), ctrl))
  apifit <- do.call(svyolr, c(list(api_cat ~ meals + ell, design = dclus1), ctrl))
  fits[[fit_name]] <- study
  for (m in list(list("study", study), list("api", apifit))) {
    o <- m[[2]]
    rows[[length(rows) + 1]] <- data.frame(
      model = m[[1]], fit = fit_name, term = names(coef(o)), estimate = coef(o),
      std_error = SE(o), df_residual = o$df.residual, convergence = o$convergence,
      n = length(o$fitted.values[, 1]))
  }
}
options(digits = 15)
write.csv(do.call(rbind, rows), file.path(here, "ordinal_reference.csv"), row.names = FALSE)

# Average marginal effects on P(Y >= level), tight study fit.
fit <- fits$tight
vars <- c("samr_level", "support_model", "frl_pct", "enrollment", "locale", "tech_spend_pp",
          "students_per_device", "years_teaching", "grade_band", "subject")
cc <- complete.cases(teachers[, vars])
d <- teachers[cc, ]
w <- weights(design)[cc]
W <- sum(w)
tt <- delete.response(terms(fit))
X <- model.matrix(tt, d)[, -1]
beta <- fit$coefficients; zeta <- fit$zeta; q <- length(zeta); pc <- length(beta)
y <- as.integer(d$samr_level)
eta <- drop(X %*% beta)
cuts <- c(-100, zeta, 100)                      # svyolr's outer cut-points
a <- cuts[y + 1] - eta; b <- cuts[y] - eta
pr <- plogis(a) - plogis(b)
fa <- dlogis(a) / pr; fb <- dlogis(b) / pr
score_zeta <- outer(fa, rep(1, q)) * outer(y, 1:q, "==") - outer(fb, rep(1, q)) * outer(y - 1, 1:q, "==")
score <- w * cbind(-X * (fa - fb), score_zeta)       # d log-likelihood / d (beta, zeta)
infl_theta <- matrix(0, nrow(teachers), pc + q)
infl_theta[cc, ] <- score %*% solve(fit$Hessian)
ame_rows <- list()
for (at_least in c("A", "M")) {
  k <- match(at_least, levels(teachers$samr_level))   # P(Y >= level k) = 1 - F(zeta_{k-1} - eta)
  rates <- numeric(length(models)); infl <- matrix(0, nrow(teachers), length(models))
  for (j in seq_along(models)) {
    cf <- d
    cf$support_model <- factor(rep(models[j], nrow(cf)), levels = models)
    Xm <- model.matrix(tt, cf)[, -1]
    e <- zeta[k - 1] - drop(Xm %*% beta)
    p <- 1 - plogis(e)
    rates[j] <- sum(w * p) / W
    g_zeta <- numeric(q); g_zeta[k - 1] <- -sum(w * dlogis(e)) / W
    grad <- c(colSums(w * dlogis(e) * Xm) / W, g_zeta)
    infl[cc, j] <- w * (p - rates[j]) / W
    infl[, j] <- infl[, j] + infl_theta %*% grad
  }
  ref <- which(models == "tech_support_only")
  v <- svyrecvar(infl[, -ref] - infl[, ref], design$cluster, design$strata, design$fpc,
                 postStrata = NULL)
  ame_rows[[at_least]] <- data.frame(at_least = at_least, support_model = models[-ref],
                                     estimate = rates[-ref] - rates[ref],
                                     std_error = sqrt(diag(v)))
}
write.csv(do.call(rbind, ame_rows), file.path(here, "ordinal_ame_reference.csv"),
          row.names = FALSE)
