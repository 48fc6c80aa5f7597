"""The file names of the cache, each typed out once (torch-free; every layer may import it)."""

# enhancer/
ENHANCER_FILE = "weights.pt"  # the fitted or imported enhancer (nothing for gamma / none)
# clips/ (and pretrain/clips/)
CLIP_INDEX = "index.json"  # every clip's split, shard and row; per-stream statistics
CLIP_ERRORS = "errors.json"  # the videos that could not be read, each with why
# soft-labels/
LOGITS_FILE = "logits.h5"  # (N, V, K) float32 teacher logits per (clip, view)
# a trained model's folder (teacher/, baseline/, student/<variant>/, pretrain/<model>/)
CHECKPOINT = "checkpoint.pt"  # the last finished epoch: model, optimizer, scheduler, epoch (resume)
BEST = "best.pt"  # the best validation epoch's weights (keep = best)
MODEL = "model.pt"  # the weights the stage keeps, with their metrics
META = "meta.json"  # classes, input statistics, model options (also beside an export)
METRICS = "metrics.jsonl"  # one line per epoch
# report/
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
CURVES_PNG, CONFUSION_PNG = "curves.png", "confusion.png"
