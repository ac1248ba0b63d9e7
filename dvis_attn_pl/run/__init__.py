"""Run orchestration, above the Lightning module and callbacks and below the CLI: what ``test`` and
``predict`` do (``runner``), their options (``options``), the input checks before the first byte
(``preflight``), resuming a run directory (``resume``), the end of a run (``summary``) and the
guard that stops every DDP rank when one fails (``ddp_guard``)."""
