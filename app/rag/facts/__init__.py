"""Facts no document holds (the clock, the calendar, arithmetic, units, tools), found before retrieval and
checked against the answer afterwards; see ``layer.py`` for the entry point."""
