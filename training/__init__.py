"""DTPR trainer: two-stage training (PRA pixel sampling) for the human parsing networks.

Modules: ``train`` (CLI) runs ``dtpr.run`` (the two stages) or ``person_training.run_persons`` (RP R-CNN),
both on the run spine of ``runs`` (start, end of epoch, end of run, the weights file via ``export``) with
the optimizer and schedules of ``schedules``, calling the epoch loops of ``engine``. ``sampling`` holds
PRA/PRN (DTPR's core), ``losses`` the losses, ``schp/`` SCHP's losses and self-correction cycles,
``metrics`` the confusion-matrix metrics; ``datasets``, ``label_statistics``, ``transforms`` and ``loaders``
feed the data; ``distributed``, ``checkpoint`` and ``seeding`` are the plumbing of multi-process, resumable,
reproducible runs; ``config`` the recipes and their checks; ``export``, ``evaluate``, ``protocol``,
``report`` and ``plots`` what comes after training; ``tools/`` dataset and run utilities.
"""
