"""One fine-tuning run: a task x a model folder x training/evaluation languages x hyper-parameters x a seed.

    medtrain finetune CONFIG [k=v ...]

Fine-tunes a local Hugging Face BERT folder (e.g. a `medtrain pretrain` export) with a newly initialised head,
in this process with plain PyTorch (AdamW, linear warmup and decay): NER (BRAT or column files, each language
read its own way, entity types mapped to one space by `labels`; token classification) or patient screening (JSONL or CSV notes, sequence classification over windows). It trains on
the mix of training languages, evaluates on dev after every epoch, keeps the epoch with the best dev F1, and
evaluates every test language separately.

The loop's fast path, each switch in train and recorded in config.yaml as it resolved (unset: the fast choice for
the machine): bf16 autocast on GPUs that have it, weights and AdamW state in fp32 (precision); PyTorch's
scaled-dot-product attention (attention); fused AdamW (fused_optimizer). The loss stays on the device and is read
back on log steps only, batches are copied from pinned memory without waiting (CUDA), and prediction batches
sequences sorted by length, answering in input order. Length-grouped training batches (group_by_length) are
there but off by default: they cost F1 on the demo's NER.

The run folder:

    config.yaml       the resolved config
    history.jsonl     train/loss, train/learning_rate, train/epoch and eval/<dev metric> by step (the
                      Hugging Face Trainer's names); the same scalars in tensorboard/ (or tensorboard_dir)
    checkpoint/       last.pt (model, optimizer, schedule, RNG, epoch) and best-eNNN.pt (best weights so far);
                      deleted once results.json is written
    cache/            tokenized features, keyed by tokenizer fingerprint and file checksums (see cache_dir)
    predictions/      NER: <lang>/<doc>.ann + .txt (BRAT); screening: <lang>.csv, one row per patient
    model/            the best epoch's model and tokenizer, with save_model: true
    results.json      written last, atomically: its presence marks the run complete

results.json holds the run's identity (task, model, format, seed, train/dev/eval languages, hparams, labels,
sizes, epochs, best_epoch, train_time_s, device, bootstrap settings), `dev` (the best epoch's pooled dev metrics,
f1_<lang> per language when there are several; screening adds the chosen threshold), for NER `label_space`
(types per language after the map, scored and unscored ones, counts dropped by keep) and `reading` (format,
skipped short lines, bare I- tags, the discontinuous policy per split and language), and `test`, per language:

    f1, precision, recall (+ auroc, auprc for screening): {value, lo, hi}, a percentile bootstrap interval over
        documents (NER; sentences when the set is one document) or patients (screening); null with a reason
        where undefined (e.g. one class)
    NER: f1 is strict exact-offset entity F1 (micro; character offsets of the document's text, or of a column
        file's synthetic text; type must match; nested and discontinuous gold kept), with micro, macro,
        per_type and recall_ceiling (what a flat tagger can reach); word_f1, word_precision, word_recall are
        seqeval strict IOB2 at word level; scored_types / unscored_types (types shared with training or not)
    screening: threshold (chosen on dev), confusion_matrix {tn, fp, fn, tp}, reasons

A killed run resumes after its last finished epoch and gives the same results as an uninterrupted one: the
data order is a function of (seed, epoch), and weights, optimizer, schedule and RNG come from the checkpoint.
Running a complete run again does nothing. Only numbers reach logs, TensorBoard and results.json.

The modules: config (the schema and the names the grid reads; no torch, so this package imports without it),
task (the interface a task family implements), ner and screening (the two families), cache (tokenized
features), model (the device and its fast path, encoder + head, batches, prediction, optimizer), checkpoint
(last.pt / best-eNNN.pt), run (the data order and the loop).
"""

from medtrain.finetune.config import RESULTS, DataConfig, EvalConfig, FinetuneConfig, TrainConfig

__all__ = ["RESULTS", "DataConfig", "EvalConfig", "FinetuneConfig", "TrainConfig"]
