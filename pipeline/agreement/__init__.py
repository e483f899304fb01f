"""Agreement statistics as pure functions of arrays; imports nothing from the project.

Conventions every function here follows:

- A score array is 1-D, float, with NaN for "no score". Paired metrics use only the units (transcripts)
  where both sides have a score.
- `levels` is a criterion's allowed points, ascending. Level-based metrics (adjacent agreement, both
  kappas, ordinal alpha, the confusion matrix) use the *order* of the levels, so on levels 0/3/5 a 0
  and a 3 are adjacent and the quadratic kappa weights them 1, not 9. Point-based metrics (MAE, bias,
  interval alpha, the correlations) use the points themselves.
- Several raters on the same units come as a units × raters matrix with NaN for "not labelled", the
  shape `LabelSet.matrix` returns (Krippendorff's `reliability_data` is its transpose).
- Undefined is NaN, never an exception: kappa when both sides gave every unit one and the same level
  (chance agreement is 1); Spearman/Kendall when either side is constant; alpha when there is no
  variation at all or no unit with two scores; every metric when no unit has both scores, and all
  but exact/adjacent/MAE/bias when only one does. `compare_scores` attaches the reason in words.
  A score that is not one of the levels is a caller's bug and raises ValueError.

Every paired metric is one entry of `table.METRICS`: its scalar form (the well-kept implementation:
scikit-learn, scipy, krippendorff) and its resampled form (numpy over resampled confusion matrices, for
the bootstrap). The bundle, the bootstrap and the undefined reasons iterate that table; `results.Metrics`
names the same metrics as fields, and a test keeps the two in step.

scipy.stats, sklearn.metrics, statsmodels, pandas and pingouin are imported inside the functions that
use them: together they cost seconds at start-up, and most `kefu` commands never compute a statistic.
"""
