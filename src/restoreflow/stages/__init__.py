"""The stages of a restoration, one file each: what a flow runs for one image.

``config``    the settings that determine a restoration (and its hash)
``models``    the prior, loaded once per worker process
``simulate``  y = noise(A x) on stored images (benchmarks, calibration)
``adapt``     retrieve neighbours and adapt the prior on them (ADIR)
``restore``   restore one image with a guided sampler, tile by tile
``calibrate`` truth metrics, conformal calibration, scores and per-pixel intervals
``records``   a run's records: its runs row, quality rows, summary and manifest (driver)

Plain functions, callable and testable without Prefect; ``tasks/`` wraps them and
``flows/`` wires them. The store's rule applies: the driver (flow) process creates images
and writes attrs and tables (``prepare_*`` / ``finish_*``); worker functions
(``restore_stored``, ``simulate_tiles``, ``write_intervals``) only write chunk-aligned
regions and small files under unique keys, and return small dicts.
"""
