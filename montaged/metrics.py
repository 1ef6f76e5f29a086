"""Every Prometheus metric Montage exports, declared once. Updated at stage boundaries."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Gauge("montage_jobs", "Jobs in the store by state", ["state"], registry=REGISTRY)
JOBS_FINISHED = Counter(
    "montage_jobs_finished_total", "Jobs that ended, by outcome", ["outcome"], registry=REGISTRY
)
STAGE_SECONDS = Histogram(
    "montage_stage_seconds",
    "Wall time of one stage of one job",
    ["stage"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
STAGE_ITEMS = Counter(
    "montage_stage_items_total", "Items that left a stage", ["stage", "outcome"], registry=REGISTRY
)
QUEUE_DEPTH = Gauge("montage_queue_depth", "Items waiting in front of a stage", ["stage"], registry=REGISTRY)
IN_FLIGHT = Gauge("montage_in_flight", "Jobs being worked on by a stage", ["stage"], registry=REGISTRY)
WORKERS_BUSY = Gauge("montage_workers_busy", "Busy workers in a process pool", ["pool"], registry=REGISTRY)
MEDIA_SECONDS = Counter(
    "montage_media_seconds_total", "Seconds of media processed to the end", registry=REGISTRY
)
PROCESSING_RATIO = Gauge(
    "montage_processing_ratio", "Wall time over media duration of the last finished job", registry=REGISTRY
)
ENCODER = Info("montage_encoder", "Video encoder chosen at start-up", registry=REGISTRY)
CLIPS = Counter("montage_clips_total", "Clips written", ["encoder"], registry=REGISTRY)
CACHE_REQUESTS = Counter(
    "montage_cache_requests_total", "Transcript/stage cache look-ups", ["cache", "result"], registry=REGISTRY
)
CLOUD_ASR = Counter(
    "montage_cloud_asr_total",
    "Cloud transcription attempts by outcome",
    ["engine", "outcome"],
    registry=REGISTRY,
)
BUDGET = Gauge("montage_budget_usd", "Cloud budget per period", ["period", "kind"], registry=REGISTRY)
STORE_UP = Gauge("montage_store_up", "1 when the job store answers", registry=REGISTRY)
REDIS_UP = Gauge("montage_redis_up", "1 when Redis answers (when configured)", registry=REGISTRY)
INTAKE_PAUSED = Gauge("montage_intake_paused", "1 while intake is paused", registry=REGISTRY)
CONTROL_REQUESTS = Counter(
    "montage_control_requests_total", "Control socket requests", ["op", "outcome"], registry=REGISTRY
)
TASK_RESTARTS = Counter(
    "montage_task_restarts_total", "Supervised daemon tasks restarted after a crash", ["task"],
    registry=REGISTRY,
)
TASK_UP = Gauge("montage_task_up", "1 while a supervised daemon task runs, 0 while it waits to restart",
                ["task"], registry=REGISTRY)
CONTROL_CONNECTIONS = Gauge(
    "montage_control_connections", "Control socket clients being served", registry=REGISTRY
)
CONTROL_DROPPED = Counter(
    "montage_control_dropped_total",
    "Control connections refused or closed by the daemon (over_cap, peer, idle_timeout, line_timeout,"
    " send_timeout, error)",
    ["reason"],
    registry=REGISTRY,
)
CONTROL_ACCEPT_ERRORS = Counter(
    "montage_control_accept_errors_total", "accept() failures on the control socket (EMFILE, ...)",
    ["errno"], registry=REGISTRY,
)
POOL_RESTARTS = Counter(
    "montage_pool_restarts_total", "Pool workers replaced after they died", ["pool"], registry=REGISTRY
)
INTAKE_REFUSED = Counter(
    "montage_intake_refused_total", "Intake entries refused, by source and reason code", ["source", "code"],
    registry=REGISTRY,
)
INTAKE_ERRORS = Counter(
    "montage_intake_errors_total",
    "Errors contained by intake tasks (moving originals, publishing outcomes), by task and code",
    ["task", "code"], registry=REGISTRY,
)
CLIP_WORD_CONFIDENCE = Histogram(
    "montage_clip_word_confidence", "Mean recognition confidence of the words in each clip",
    buckets=(0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0), registry=REGISTRY,
)
CLIP_LOW_CONFIDENCE_SHARE = Histogram(
    "montage_clip_low_confidence_share",
    "Share of each clip's words under render.quality.low_word_confidence",
    buckets=(0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0), registry=REGISTRY,
)
CLIP_LOUDNESS = Histogram(
    "montage_clip_loudness_lufs", "Integrated loudness of each clip as written (LUFS)",
    buckets=(-30, -24, -20, -18, -16, -15, -14.5, -14, -13.5, -13, -12, -10), registry=REGISTRY,
)
CLIP_TRUE_PEAK = Histogram(
    "montage_clip_true_peak_dbtp", "True peak of each clip as written (dBTP)",
    buckets=(-9, -6, -3, -2, -1.5, -1, -0.5, 0, 1), registry=REGISTRY,
)
CLIPS_ASSESSED = Counter(
    "montage_clips_assessed_total", "Clips assessed for quality, by whether they were flagged", ["flagged"],
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "montage_queue_wait_seconds", "Time from a job's submission to its first claim",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600), registry=REGISTRY,
)
MEMORY_AVAILABLE = Gauge(
    "montage_memory_available_bytes",
    "Memory this process can still use (host MemAvailable, or less under a cgroup limit), as the "
    "memory guard last sampled it", registry=REGISTRY,
)
MEMORY_GUARD_PAUSED = Gauge(
    "montage_memory_guard_paused", "1 while the memory guard holds claims back (memory low), else 0",
    registry=REGISTRY,
)
PRUNED = Counter(
    "montage_pruned_total", "Rows deleted by retention (periodic and montagectl purge), by kind",
    ["kind"], registry=REGISTRY,
)
CLIP_CROP_CONFIDENCE = Histogram(
    "montage_clip_crop_confidence", "Framing confidence of each clip written (clips that were framed)",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), registry=REGISTRY,
)
CLIP_FACE_CONFIDENCE = Histogram(
    "montage_clip_face_confidence", "Mean face-detection score of the faces seen in each framed clip",
    buckets=(0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0), registry=REGISTRY,
)
CLIP_SPEAKER_IN_CROP = Histogram(
    "montage_clip_speaker_in_crop",
    "Share of each framed clip's sampled frames with the active speaker's face inside the crop",
    buckets=(0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0), registry=REGISTRY,
)
CLIP_SSIM = Histogram(
    "montage_clip_ssim", "Mean SSIM of each clip's encode against its cropped source at sampled frames",
    buckets=(0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 1.0), registry=REGISTRY,
)
