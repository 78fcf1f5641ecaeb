"""Capacity planning (`simulate plan PLAN.yaml`): the cheapest deployment that meets an SLO
at a target load.

For every candidate deployment in the plan, a search finds the highest arrival rate one
replica sustains within the SLO (many independent simulations, run on local processes or
Ray and cached on disk); the replicas, devices and cost to serve the target rate follow,
and the candidates are ranked by the plan's objective.

Modules, in the order a plan flows through them:
  plan_file   the plan's schema and loading (errors name the field path)
  workload    the plan's requests in memory, replayed at any rate
  candidates  each candidate prepared as a deployment, or infeasible with the reason
  search      the capacity search (bracketing, then bisection)
  point       one simulation: what a worker runs
  cache       point keys and the on-disk cache that makes plans resumable
  executors   local worker processes or Ray, behind one interface
  sizing      replicas, devices, cost, energy, ranking and margin
  outputs     results.csv, candidates.csv, plan.json
  run_plan    the driver: all of the above, and the recommended run
  console     the progress bar and the terminal table
"""
