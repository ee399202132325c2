"""No models: jobkit keeps its tables in its own store, Django's database is untouched."""
