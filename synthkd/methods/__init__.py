"""Generation methods: async generators over a Teacher — rows in, rows out as they complete.

Methods never sleep, retry or cache: the teacher engine does that.  A method yields plain dict rows
with a stable ``id``; a row that could not be produced (the teacher failed for good) carries
``reject_reason`` and is routed to the rejects file by :func:`synthkd.methods.runner.write_rows`.
"""
