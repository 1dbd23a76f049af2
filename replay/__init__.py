"""lola.replay: the LOLA paper replay (Table 8, Figure 7; appendix G.1-G.3) through the worker's kernels.

Modules: ``protocol`` (tests as arrays, seeds, grids), ``priors`` (prior tables),
``sim`` (the one contact with ``lola.kernels``), ``run`` (tune, then report),
``report`` (tables, paired t-tests, plots), ``bai`` (appendix G.1), ``premise``
(the ideal observer) and ``cli`` (``lola replay``).
"""
