"""The report's *Statistical method* section: the model, the multiplicity control and the
sequential design, each named with its reference, in the numbers of this experiment."""

from __future__ import annotations

from ablate.report import across, effects, failures

REFERENCES = (
    "Holm, S. (1979). A simple sequentially rejective multiple test procedure. *Scand. J. Statist.* 6:65–70.",
    "Schuirmann, D. J. (1987). A comparison of the two one-sided tests procedure and the power approach "
    "for assessing the equivalence of average bioavailability. *J. Pharmacokin. Biopharm.* 15:657–680.",
    "Lan, K. K. G. & DeMets, D. L. (1983). Discrete sequential boundaries for clinical trials. "
    "*Biometrika* 70:659–663.",
    "O'Brien, P. C. & Fleming, T. R. (1979). A multiple testing procedure for clinical trials. "
    "*Biometrics* 35:549–556.",
    "Jennison, C. & Turnbull, B. W. (1989). Interim analyses: the repeated confidence interval approach. "
    "*J. R. Statist. Soc. B* 51:305–361; (2000) *Group Sequential Methods with Applications to Clinical "
    "Trials*, Chapman & Hall (ch. 3.8: t statistics; ch. 19: numerical computation).",
    "Maurer, W. & Bretz, F. (2013). Multiple testing in group sequential trials using graphical "
    "approaches. *Stat. Biopharm. Res.* 5:311–320.",
    "Brown, M. B. & Forsythe, A. B. (1974). Robust tests for the equality of variances. *JASA* 69:364–367.",
    "Clopper, C. J. & Pearson, E. S. (1934). The use of confidence or fiducial limits illustrated in the "
    "case of the binomial. *Biometrika* 26:404–413.",
    "McNemar, Q. (1947). Note on the sampling error of the difference between correlated proportions or "
    "percentages. *Psychometrika* 12:153–157.",
)


def section(d, ctx) -> None:
    meta = ctx.meta
    a, sesoi, alpha = ctx.analysis, meta.analysis.sesoi, meta.analysis.alpha
    m = len(meta.comparisons)
    pol = meta.seed_policy
    d("## Statistical method", "",
      "- **Model** (primary analysis): one linear model per metric over all finished runs, "
      "log(metric) ~ variant + seed, the seeds as fixed blocks (ordinary least squares; numpy, checked "
      "against statsmodels in the tests). Log scale for FID, KID, the validation-FID AUC and the run "
      "times and rates, raw scale for the rest. A hack's effect is the contrast of its design comparison (ON variant − OFF variant), "
      "reported as the ratio ON/OFF; its standard error uses the residual variance of every run "
      "(residual df "
      + (f"{a.fit.df_resid}" if a.fit is not None else "–") + "). Where seeds are unbalanced (adaptive "
      "grids) a mixed model with a random seed intercept (REML, its variance ratio profiled; checked against statsmodels MixedLM) is shown beside it. "
      "Assumptions: Brown-Forsythe test of equal residual variance across variants, Shapiro-Wilk test of "
      "normal residuals, and the residual plot.",
      f"- **Verdicts**: with a smallest effect of interest (SESOI) of ±{sesoi:.0%} (`[analysis] sesoi`; "
      f"ratio within [1/{1 + sesoi:g}, {1 + sesoi:g}], symmetric on the log scale, so swapping ON and OFF "
      "changes no verdict), each hack *helps* or *hurts* when the difference test rejects ratio = 1, is "
      "*equivalent within ±SESOI* when two one-sided tests (TOST, Schuirmann 1987) reject |log ratio| ≥ "
      f"log(1 + SESOI) (both: a real but negligible effect, reported as equivalent), and is otherwise "
      "*undecided*, with the interval of what it could still be.",
      f"- **Multiplicity**: Holm's step-down procedure (Holm 1979) across the {m} "
      + ("(hack, level) comparisons" if meta.axes else "hacks") + ", separately for the "
      f"difference and the equivalence tests, each family at α = {alpha}: a hypothesis is tested at α/m = "
      f"{alpha / max(m, 1):.3g}, and the level of each rejected one is shared among those left. The "
      "intervals in the tables are at the level each hypothesis was last tested at, so an interval "
      "excludes 1 exactly when its hack helps or hurts.",
      "- **Sequential design**: " + (
          f"adaptive seeds, looks at {list(a.planned)} seeds per variant; after each look only the variants of "
          "undecided contrasts get more seeds, and the grid stops when every contrast is decided or at "
          f"{pol.max} seeds. " if pol.adaptive else
          "one look (fixed seeds); with `seeds = { min, max }` the grid adds seeds only to undecided contrasts. ")
      + "Type-I and false-equivalence error rates are kept over the looks by a group-sequential design: "
      "a Lan-DeMets alpha-spending function of O'Brien-Fleming type (Lan & DeMets 1983; O'Brien & "
      "Fleming 1979) per hypothesis, information fraction = seeds / max seeds, two-sided tests spending "
      "α/2 per side; Holm's level sharing in its group-sequential graphical form (Maurer & Bretz 2013); "
      "t statistics mapped to the normal scale by matching p-values (Jennison & Turnbull 2000, ch. 3.8); "
      "boundaries by recursive numerical integration (Jennison & Turnbull 2000, ch. 19), and intervals as "
      "repeated confidence intervals (Jennison & Turnbull 1989). tests/test_report_sequential.py simulates the "
      "procedure and checks both error rates.",
      "- **Sensitivity**: the per-hack paired t-test (`scipy.stats.ttest_rel` on the log scale; n − 1 df, "
      "per-comparison 95% interval); a bootstrap interval (BCa) only from "
      f"{effects.BOOTSTRAP_MIN_PAIRS} pairs up (below, the percentile bootstrap is close to [min, max] and "
      "covers far less than 95%). Diverged runs: the finished-only estimate is primary; beside it each "
      "diverged run enters with the worst finished value of the experiment (worst-value rule), so a hack "
      "that prevents divergence is not credited with nothing.",
      f"- **Failures**: a run is collapsed when it misses ≥ {failures.COLLAPSE_MODES} modes, calibrated so "
      f"that real data of the same size is flagged with probability ≤ {failures.NULL_FLAG_PROB:g}; class "
      "divergence by Jensen-Shannon (it sees missing classes). Collapse and divergence rates per variant "
      "with exact Clopper-Pearson intervals (statsmodels); per hack, exact McNemar tests on the seed-paired "
      "outcomes (statsmodels), Holm across hacks.",
      "- **Power**: the smallest contrast detected with 80% power at α/m (the first Holm step) is "
      "se·(t_{1−α/2m} + t_{0.8}) on the model's residual df, stated as a decrease and as an increase, with se "
      "and the seeds per variant of the median contrast (an adaptive design gives the hacks different "
      "numbers of seeds); the paired test's from the noncentral t distribution at the median number of "
      "pairs and the pooled sd of the paired differences.",
      "- **Factorial designs**: OLS on ±1-coded hacks with seed blocks; an interaction is estimated only if "
      "it is not aliased.", *across.method_lines(ctx), "", "References:", "", *[f"- {r}" for r in REFERENCES], "")
