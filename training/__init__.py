"""DTPR trainer: two-stage training (PRA pixel sampling) for the human parsing networks.

Modules: ``train`` (CLI) runs ``dtpr.run``, the two-stage loop, which calls the
epoch loops of ``engine``. ``sampling`` holds PRA/PRN (DTPR's core), ``losses``
the losses, ``metrics`` the confusion-matrix metrics; ``datasets``,
``transforms`` and ``loaders`` feed the data; ``distributed``, ``checkpoint``
and ``seeding`` are the plumbing of multi-process, resumable, reproducible runs;
``config`` the recipes; ``export``, ``evaluate``, ``protocol``, ``report`` and
``plots`` what comes after training; ``tools/`` dataset and run utilities.
"""
