"""Chaos trials in the lab: primary failure x control-plane fault x moment x traffic mix.

Each trial runs in a fresh lab; every client connection must end masked or reset
cleanly, never corrupted, never hung.

    .venv/bin/python -m bench.chaos [--trials 200] [--seed 1] [--out bench/results/chaos.json]
    .venv/bin/python -m bench.chaos --smoke          # 2 trials, for CI (bench/results/chaos-smoke.json)
    .venv/bin/python -m bench.chaos --resume bench/results/chaos.json   # carry on an interrupted run

The modules, one responsibility each:

* ``draw``     what a trial's failure, fault, moment and traffic mix are, drawn from a
               random.Random seeded with "<seed>:<trial>" (a trial is reproducible on
               its own and --resume continues the same sequence);
* ``faults``   a control-plane fault injected into the running lab;
* ``clients``  services/client.py on a lab host, its progress followed as it runs;
* ``oracle``   what each client connection's outcome is (masked, reset, corrupted,
               hung, ...), from its bytes' SHA-256s and the controller's record;
* ``trial``    one trial: a lab, the clients, the failure and fault at their moment,
               the verdicts, the evidence of a bad trial;
* ``report``   the summary in the results JSON and the Markdown tables printed at the end;
* ``__main__`` the command line: the trials in order, results rewritten after each one.

Only one lab runs on this machine at a time: each trial holds an exclusive flock on
/run/ftcp-lab.lock for the whole life of its Lab (run dir /run/ftcp-chaos). Results are
rewritten after every trial (bench/results/chaos.json: commit, dirty, args, argv, mode
= full (>= 200 trials) | short | smoke | only, started/finished, trials, summary); a Markdown
table of outcomes by fault x moment, the reset reasons and the masked connections'
stalls (the longest silence spanning the failure, as bench/failover_bench.py measures
it) is printed at the end. Exit status 1 if any trial was corrupted, hung, reset
unexplained or an error. A trial takes ~10 s here (lab start 3 s, clients 3-7 s,
teardown 1 s; without waiting for the lock): 200 trials ~35 min.

To look at one trial again: ``--seed S --only I`` reruns trial I with the same draws
(``--keep-all`` keeps its logs even if it passes); ``--force moment=handshake
--force fault=controller_kill`` replaces draws in every trial (recorded as ``forced``).
"""
from topology.processes import ROOT

PORT = 7000
RESULTS = ROOT / "bench/results"
RUN_DIR = "/run/ftcp-chaos"
CLIENT_IPS = {"c1": "10.0.0.1", "c2": "10.0.0.2"}
