"""The one SLURM layer: resources, submitit executors and their errors, job status, job submission,
and the command lines that start ranks. Only this package imports submitit."""
