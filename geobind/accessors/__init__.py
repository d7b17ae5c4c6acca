"""The ``.geobind`` accessors on xarray and GeoPandas objects (thin shells over ``inference``)."""
