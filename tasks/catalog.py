"""The nine MER-UniBench tasks (spec §1). A new task is one more register_task call."""
from unibench.tasks.base import TaskSpec, register_task

_VIDEO = (".mp4", ".avi")
_AUDIO = (".wav",)
_FACE = (".npy",)


def _media(video: str, audio: str) -> tuple:
    # every dataset folder of the benchmark ships OpenFace crops (AffectGPT reads them for all nine)
    return (("video", video, _VIDEO), ("audio", audio, _AUDIO), ("face", "openface_face", _FACE))


register_task(TaskSpec(
    id="mer2023", folder="mer2023-dataset-process", gt_file="label-6way.npz", gt_key="test1_corpus",
    expected_count=411, gt_kind="emo_str", family="basic",
    subtitle_file="transcription-engchi-polish.csv", media=_media("video", "audio")))
register_task(TaskSpec(
    id="mer2024", folder="mer2024-dataset-process", gt_file="label-6way.npz", gt_key="test1_corpus",
    expected_count=1169, gt_kind="emo_str", family="basic",
    subtitle_file="transcription_merge.csv", media=_media("video", "audio")))
register_task(TaskSpec(
    id="meld", folder="meld-process", gt_file="label.npz", gt_key="test_corpus",
    expected_count=2610, gt_kind="emo_index", family="basic",
    emotions=("anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise"),
    subtitle_file="transcription-engchi-polish.csv", media=_media("subvideo", "subaudio")))
register_task(TaskSpec(
    id="iemocapfour", folder="iemocap-process", gt_file="label_4way.npz", gt_key="whole_corpus",
    expected_count=1241, gt_kind="emo_index", family="basic", split="session5",
    emotions=("happy", "sad", "neutral", "anger"),
    subtitle_file="transcription-engchi-polish.csv", media=_media("subvideo-tgt", "subaudio")))
register_task(TaskSpec(
    id="cmumosi", folder="cmumosi-process", gt_file="label.npz", gt_key="test_corpus",
    expected_count=686, gt_kind="val", family="sentiment",
    subtitle_file="transcription-engchi-polish.csv", media=_media("subvideo", "subaudio")))
register_task(TaskSpec(
    id="cmumosei", folder="cmumosei-process", gt_file="label.npz", gt_key="test_corpus",
    expected_count=4659, gt_kind="val", family="sentiment",
    subtitle_file="transcription-engchi-polish.csv", media=_media("subvideo_new", "subaudio")))
register_task(TaskSpec(
    id="sims", folder="sims-process", gt_file="label.npz", gt_key="test_corpus",
    expected_count=457, gt_kind="val", family="sentiment",
    subtitle_file="transcription-engchi-polish.csv", media=_media("video", "audio")))
register_task(TaskSpec(
    id="simsv2", folder="simsv2-process", gt_file="label.npz", gt_key="test_corpus",
    expected_count=1034, gt_kind="val", family="sentiment",
    subtitle_file="transcription-engchi-polish.csv", media=_media("video_new", "audio")))
register_task(TaskSpec(
    id="ovmerdplus", folder="ovmerdplus-process", gt_file="ovlabel.csv", gt_key="name,openset",
    expected_count=532, gt_kind="openset", family="ov",
    subtitle_file="subtitle_eng.csv", subtitle_column="sentence", media=_media("video", "audio")))

# Not one of the nine: OV-MERD (the MER2024 OV track's 332 test samples), for the OV-MER zero-shot
# baselines. `--task ovmerd` runs it; `--task all` and the leaderboard columns leave it out.
register_task(TaskSpec(
    id="ovmerd", folder=".", gt_file="check-openset.csv", gt_key="name,openset",
    expected_count=332, gt_kind="openset", family="ov",
    subtitle_file="subtitle_eng.csv", subtitle_column="sentence", media=_media("video", "audio"),
    in_benchmark=False))
