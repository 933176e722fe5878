"""A run: its configuration (`keras_vae.runs.config.TrainConfig`), its directory of files
and verified backups (`keras_vae.runs.directory`), and the data splits it was trained and is
evaluated on (`keras_vae.runs.splits`).

`from keras_vae import runs; runs.load_run(RUN_DIR)` keeps working: every public name of
`keras_vae.runs.directory` is available here.
"""

from keras_vae.runs.directory import (  # noqa: F401
    BACKUP_DIR,
    BACKUP_STATE,
    CONFIG_FILE,
    HISTORY_FILE,
    IMAGES_DIR,
    METRICS_FILE,
    MODEL_FILE,
    TENSORBOARD_DIR,
    ResourceError,
    RunBackup,
    RunDirectoryError,
    RunStateError,
    atomic_write_json,
    atomic_write_text,
    backup_states,
    check_run_dir,
    finish_run,
    history_to_csv,
    load_config,
    load_model,
    load_run,
    prepare_run_dir,
    read_backup_state,
    save_model,
    verify_backup,
)

__all__ = [
    "BACKUP_DIR",
    "BACKUP_STATE",
    "CONFIG_FILE",
    "HISTORY_FILE",
    "IMAGES_DIR",
    "METRICS_FILE",
    "MODEL_FILE",
    "TENSORBOARD_DIR",
    "ResourceError",
    "RunBackup",
    "RunDirectoryError",
    "RunStateError",
    "atomic_write_json",
    "atomic_write_text",
    "backup_states",
    "check_run_dir",
    "finish_run",
    "history_to_csv",
    "load_config",
    "load_model",
    "load_run",
    "prepare_run_dir",
    "read_backup_state",
    "save_model",
    "verify_backup",
]
