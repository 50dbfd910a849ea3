# Reference for analysis.stats.robustness.pool_rubin: Rubin's rules with the
# Barnard-Rubin degrees of freedom, from R's mitools::MIcombine (df.complete given).
# Run: Rscript tests/reference/robustness_rubin_reference.R > tests/reference/robustness_rubin_reference.csv
suppressMessages(library(mitools))
est <- list(c(a = 1.00, b = -0.50, c = 2.0),
            c(a = 1.20, b = -0.45, c = 2.6),
            c(a = 0.90, b = -0.55, c = 1.7),
            c(a = 1.10, b = -0.40, c = 2.2),
            c(a = 1.05, b = -0.52, c = 2.9))
se <- list(c(0.20, 0.10, 0.50), c(0.22, 0.11, 0.45), c(0.19, 0.10, 0.55),
           c(0.21, 0.12, 0.50), c(0.20, 0.10, 0.48))
vars <- lapply(se, function(s) diag(s^2, 3))
rows <- lapply(c(40, Inf), function(dfc) {
  fit <- MIcombine(est, vars, df.complete = dfc)
  data.frame(df_complete = dfc, term = names(coef(fit)), estimate = coef(fit),
             std_error = sqrt(diag(vcov(fit))), df = fit$df, fmi = fit$missinfo)
})
out <- do.call(rbind, rows)
write.csv(format(out, digits = 12, trim = TRUE), stdout(), row.names = FALSE, quote = FALSE)
