"""support-models: which way of supporting teachers with technology goes with better teaching.

The package is laid out in the order the data flows:

- ``analysis.study``: the instrument (codebook) and the study simulator;
- ``analysis.data``: raw exports -> processed tables (ingest, clean, derive, weights);
- ``analysis.stats``: survey design, models, marginal effects;
- ``analysis.report``: figures, tables, results.json and provenance.
"""

__version__ = "0.1.0"
