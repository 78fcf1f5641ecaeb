"""The pieces of the kernel-measuring harness `python -m validation.measure` (its run is validation/measure.py).

One module an idea, so that each can be read (and changed) without the others: `cli` turns the
flags into Options; `cpu_backend` (numpy) and `torch_backend` (torch, timed by `torch_timing`)
plan the shapes of `validation/shapes.py` and time them, `collectives` over spawned processes;
`gpu_monitor` and `host` record the machine; `summary` makes a row of trial times; `failures`
says what could not be measured; `output` writes the CSV and its metadata. Nothing here imports
torch until a torch backend is made.
"""
