# Reference values for scale reliability (analysis/stats/reliability.py), from R's psych
# package and stats::factanal.
#
# Data: the agreeableness (A1-A5, A1 reverse-keyed) and conscientiousness (C1-C5, C4
# and C5 reverse-keyed) items of psych's bfi data set (2,800 respondents of the SAPA
# project, 6-point items, with missing values), written to reliability_data.csv.gz,
# plus a 6-row toy example used in a docstring.
#
# For each scale:
#   alpha_listwise      psych::alpha(x, keys, use = "complete.obs")$total$raw_alpha
#   alpha_ci_low/high   Feldt's CI, psych::alpha.ci(alpha, n.obs = complete rows, n.var)
#   alpha_pairwise      psych::alpha(x, keys)$total$raw_alpha (use = "pairwise", default)
#   alpha_pairwise_ci_* psych's own Feldt CI ($feldt), n.obs = all rows
#   omega, omega_std    McDonald's omega from factanal(factors = 1) on the complete
#                       rows (ML, tight optimiser tolerance): (sum l)^2 / ((sum l)^2 +
#                       sum u) with the unstandardised (l * sd, u * sd^2) or the
#                       standardised loadings l and uniquenesses u (for the 3-item toy
#                       example, just identified, the closed form l_1^2 = r12 r13 / r23
#                       etc. instead: its ML solution is exact and factanal's optimiser
#                       stops at 1e-7 of it so close to the Heywood bound)
# and the loadings and uniquenesses themselves in reliability_loadings_reference.csv,
# with those of a Heywood case (a correlation matrix given below).
#
# Run from the project root:  Rscript tests/reference/reliability_reference.R
# Produced with R 4.2.2, psych 2.2.9 (Debian r-cran-psych).
suppressPackageStartupMessages(library(psych))
here <- "tests/reference"
data(bfi, package = "psych")
items <- bfi[, c(paste0("A", 1:5), paste0("C", 1:5))]
write.csv(items, gzfile(file.path(here, "reliability_data.csv.gz")), row.names = FALSE)
toy <- data.frame(a = c(1, 2, 3, 4, 5, 2), b = c(2, 2, 3, 5, 5, 1), c = c(1, 3, 3, 4, 4, 2))

scales <- list(
  agreeableness = list(data = items[, paste0("A", 1:5)], reverse = "A1", points = 6),
  conscientiousness = list(data = items[, paste0("C", 1:5)], reverse = c("C4", "C5"), points = 6),
  toy = list(data = toy, reverse = character(0), points = 5)
)
tight <- list(opt = list(factr = 1, pgtol = 0, maxit = 10000))
rows <- list(); loads <- list()
for (name in names(scales)) {
  s <- scales[[name]]
  x <- s$data
  for (r in s$reverse) x[[r]] <- s$points + 1 - x[[r]]
  cc <- na.omit(x)
  k <- ncol(x)
  a_list <- psych::alpha(x, use = "complete.obs", warnings = FALSE)$total$raw_alpha
  ci <- psych::alpha.ci(a_list, n.obs = nrow(cc), n.var = k)
  a_pair <- psych::alpha(x, warnings = FALSE)
  if (k == 3) {
    R <- cor(cc)
    l <- sqrt(c(R[1, 2] * R[1, 3] / R[2, 3], R[1, 2] * R[2, 3] / R[1, 3],
                R[1, 3] * R[2, 3] / R[1, 2]))
    names(l) <- colnames(cc); u <- 1 - l^2
  } else {
    fa <- factanal(covmat = cov(cc), factors = 1, n.obs = nrow(cc), control = tight)
    l <- fa$loadings[, 1] * sign(sum(fa$loadings[, 1])); u <- fa$uniquenesses
  }
  sds <- sqrt(diag(cov(cc)))
  omega <- sum(l * sds)^2 / (sum(l * sds)^2 + sum(u * sds^2))
  omega_std <- sum(l)^2 / (sum(l)^2 + sum(u))
  rows[[name]] <- data.frame(scale = name, n_items = k, n = nrow(cc), n_rows = nrow(x),
                             alpha_listwise = a_list, alpha_ci_low = ci$lower.ci,
                             alpha_ci_high = ci$upper.ci,
                             alpha_pairwise = a_pair$total$raw_alpha,
                             alpha_pairwise_ci_low = as.numeric(a_pair$feldt$lower.ci),
                             alpha_pairwise_ci_high = as.numeric(a_pair$feldt$upper.ci),
                             omega = omega, omega_std = omega_std)
  loads[[name]] <- data.frame(scale = name, item = names(l), loading = l, uniqueness = u)
}
# A Heywood case: the one-factor solution of this correlation matrix has a loading
# above 1, so factanal stops the first uniqueness at its lower bound (0.005).
heywood <- matrix(c(1, 0.8, 0.8, 0.3, 0.8, 1, 0.5, 0.3, 0.8, 0.5, 1, 0.3, 0.3, 0.3, 0.3, 1), 4,
                  dimnames = list(paste0("h", 1:4), paste0("h", 1:4)))
fa <- factanal(covmat = heywood, factors = 1, n.obs = 200, control = tight)
loads[["heywood"]] <- data.frame(scale = "heywood", item = rownames(heywood),
                                 loading = fa$loadings[, 1] * sign(sum(fa$loadings[, 1])),
                                 uniqueness = fa$uniquenesses)
options(digits = 15)
write.csv(do.call(rbind, rows), file.path(here, "reliability_reference.csv"), row.names = FALSE)
write.csv(do.call(rbind, loads), file.path(here, "reliability_loadings_reference.csv"),
          row.names = FALSE)
