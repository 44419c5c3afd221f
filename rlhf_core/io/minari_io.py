"""A project's trajectories as a Minari dataset (the Farama Foundation's offline-RL format), and back.

Export (:func:`export_minari`) writes the live trajectories of one environment into Minari's own
data folder (``MINARI_DATASETS_PATH``, else ``~/.minari/datasets``), so that
``minari.load_dataset(dataset_id)`` finds it. One episode per trajectory, in id order: the T+1
observations, T actions, T true rewards, and terminations/truncations (the last step is terminated
when the episode ended in a terminal state, else truncated: a time limit or the rollout's cap).
Arrays take the dtypes of the environment's spaces (Discrete actions as int64; stored float32 values
are exact in float64). Each episode's metadata holds ``seed``, ``workbench_item_id`` and
``workbench_source``. The writing is minari 0.5.4's own (``MinariStorage.new``, ``update_metadata``,
``update_episodes``: what ``minari.create_dataset_from_buffers`` does) into a hidden folder next to
the target, renamed into place once complete, so a failed export leaves no dataset behind. Minari
never touches the network on these paths.

Import (:func:`import_minari`) reads a dataset that is already in that folder (the workbench never
downloads; ``minari download ID`` does) and stores each episode as a trajectory item with source
``import`` (no video: Minari keeps no frames), which the ``bc`` job takes by default and clips and
rankings can use. ``ranking`` also stores one ranking of the episodes for T-REX (the
``reward_model`` job's ``rankings`` source): ``return`` (by summed reward; equal returns tie, source
``synthetic``) or ``order`` (the dataset's episode order, first = worst, as demonstrations saved
along training; source ``auto``). D-REX starts from a ``bc`` policy on these demonstrations.

Everything is checked before anything is written; the items (and ranking) go in one transaction:
a bad dataset id, an unknown dataset, a dataset whose environment the workbench cannot make or
whose spaces are not that environment's, an episode with a missing or inconsistent field, or a
dataset already imported raises :class:`MinariError` and writes nothing. The environment is made
from the dataset's env id only (a registered id; an id naming a module is refused): its stored
entry point is never imported.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer
from minari.dataset.minari_dataset import DATASET_ID_RE, parse_dataset_id
from minari.dataset.minari_storage import MinariStorage
from minari.namespace import create_namespace, list_local_namespaces
from minari.storage import get_dataset_path

from rlhf_core import __version__
from rlhf_core.envs.make import EnvError, close_env, make_env
from rlhf_core.envs.rollout import Trajectory
from rlhf_core.envs.storage import load_arrays, save_trajectory
from rlhf_core.store.project import Project, write_into

IMPORT_SOURCE = "import"  # items.source of imported trajectories (as the TRL import's responses)
RANKINGS = ("none", "return", "order")
MAX_RANKED_EPISODES = 300  # a ranking stores all its pairs: 300 episodes are 44,850 comparison rows
MAX_ID_CHARS = 200
ID_HELP = ("namespace/name-vN, e.g. 'workbench/cartpole-demos-v0' (letters, digits, '-' and '_'; "
           "the namespace is optional, the version is not)")
_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")
_SPACES = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)


class MinariError(ValueError):
    """A dataset id, dataset or export the workbench cannot use; ``str(error)`` says why. Nothing was written."""


@dataclasses.dataclass
class MinariExport:
    dataset_id: str
    path: Path  # the dataset's folder (its data/ holds metadata.json and the HDF5 file)
    env_id: str
    episodes: int
    steps: int
    trajectory_ids: list[int]
    skipped_empty: int = 0  # trajectories of no steps (Minari needs at least one)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


@dataclasses.dataclass
class MinariImport:
    dataset_id: str
    project: Path
    env_id: str
    trajectory_ids: list[int]
    steps: int
    ranking: str = "none"
    ranking_id: int | None = None
    skipped_empty: int = 0
    project_created: bool = False

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["project"] = str(self.project)
        return d


# ------------------------------------------------------------------------------- ids and folders
def check_dataset_id(dataset_id: str) -> str:
    """``dataset_id`` if it follows Minari's naming rules (with a version); :class:`MinariError` otherwise."""
    text = dataset_id if isinstance(dataset_id, str) else ""
    match = DATASET_ID_RE.fullmatch(text) if 0 < len(text) <= MAX_ID_CHARS else None
    if match is None or match.group("version") is None or "//" in text:
        shown = str(dataset_id)[:60].encode("utf-8", "backslashreplace").decode()
        raise MinariError(f"{shown!r} is not a Minari dataset id: write {ID_HELP}")
    return text


def datasets_folder() -> Path:
    """Minari's data folder (``MINARI_DATASETS_PATH`` or its default), as minari itself finds it."""
    return Path(get_dataset_path())


def local_datasets() -> list[str]:
    """The ids of the datasets in Minari's data folder (read locally, never from the hub)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a misconfigured folder is skipped with a warning
        return sorted(minari.list_local_datasets())


# ------------------------------------------------------------------------------- export
def export_minari(project: Project, env_id: str, dataset_id: str, *, trajectory_ids: list[int] | None = None,
                  author: str | None = None, description: str | None = None) -> MinariExport:
    """Write the project's live trajectories of ``env_id`` (or the given ones) as Minari dataset
    ``dataset_id``; see the module docstring. Raises :class:`MinariError` (or ``EnvError``)."""
    dataset_id = check_dataset_id(dataset_id)
    rows = _trajectories_to_export(project, env_id, trajectory_ids)
    env = make_env(env_id, render=False)
    try:
        obs_space, act_space, env_spec = env.observation_space, env.action_space, env.spec
    finally:
        close_env(env)
    for what, space in (("observations", obs_space), ("actions", act_space)):
        if not isinstance(space, _SPACES):
            raise MinariError(f"{env_id} has {type(space).__name__} {what}; the workbench exports Box, Discrete, "
                              "MultiDiscrete and MultiBinary spaces")
    buffers, ids, episode_meta, skipped, steps = [], [], [], 0, 0
    for row in rows:
        arrays = load_arrays(project, row)
        T = len(arrays["rewards"])
        if T == 0:
            skipped += 1
            continue
        where = f"trajectory {row['id']}"
        terminated = bool(json.loads(row["meta_json"] or "{}").get("terminated", False))
        ends = np.zeros(T, dtype=bool)
        terminations, truncations = ends.copy(), ends.copy()
        (terminations if terminated else truncations)[-1] = True
        buffers.append(EpisodeBuffer(
            seed=None if row["seed"] is None else int(row["seed"]),
            observations=_as_space(arrays["observations"], obs_space, T + 1, f"{where}: its observations"),
            actions=_as_space(arrays["actions"], act_space, T, f"{where}: its actions"),
            rewards=np.asarray(arrays["rewards"], dtype=np.float32), terminations=terminations,
            truncations=truncations, infos={}))
        ids.append(int(row["id"]))
        episode_meta.append({"workbench_item_id": int(row["id"]), "workbench_source": str(row["source"])})
        steps += T
    if not buffers:
        raise MinariError(f"the project's trajectories of {env_id} have no steps; nothing to export")
    sources = ", ".join(sorted({m["workbench_source"] for m in episode_meta}))
    metadata = {
        "dataset_id": dataset_id,
        "algorithm_name": f"RLHF Workbench trajectories (sources: {sources})",
        "description": description or (f"{len(buffers)} trajectories of {env_id} exported by RLHF Workbench "
                                       f"{__version__} from the project {project.name!r}."),
    }
    if author:
        metadata["author"] = {author}
    path = _write_dataset(dataset_id, obs_space, act_space, env_spec, buffers, metadata, episode_meta)
    return MinariExport(dataset_id=dataset_id, path=path, env_id=env_id, episodes=len(buffers), steps=steps,
                        trajectory_ids=ids, skipped_empty=skipped)


def _trajectories_to_export(project: Project, env_id: str, trajectory_ids: list[int] | None) -> list[dict]:
    if trajectory_ids:
        rows = []
        for tid in trajectory_ids:
            row = project.get_item(int(tid))
            if row is None or row["kind"] != "trajectory" or row["deleted_at"] is not None:
                raise MinariError(f"item {tid} is not a trajectory of this project")
            if row["env_id"] != env_id:
                raise MinariError(f"trajectory {tid} is of {row['env_id']}, not {env_id}")
            rows.append(row)
        return rows
    rows = [t for t in project.items("trajectory") if t["env_id"] == env_id]
    if not rows:
        envs = sorted({t["env_id"] for t in project.items("trajectory") if t["env_id"]})
        have = f"; it has trajectories of {', '.join(envs)}" if envs else "; it has no trajectories yet"
        raise MinariError(f"the project has no trajectories of {env_id}{have}")
    return rows


def _as_space(values: np.ndarray, space: gym.Space, n: int, what: str) -> np.ndarray:
    """``values`` (n rows) reshaped and cast to ``space``'s shape and dtype; :class:`MinariError` if they do not fit."""
    values = np.asarray(values)
    shape = tuple(space.shape or ())
    if values.size != n * int(np.prod(shape)):
        raise MinariError(f"{what} have shape {values.shape}, not {n} of the environment's {shape}: "
                          "were they recorded in another version of the environment?")
    values = values.reshape((n, *shape))
    if np.issubdtype(space.dtype, np.integer) or space.dtype == np.bool_:
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            raise MinariError(f"{what} are not whole numbers, but the environment's space is {space}")
    _check_discrete(values, space, what)
    return values.astype(space.dtype)


def _check_discrete(values: np.ndarray, space: gym.Space, what: str) -> None:
    """Refuse values outside a Discrete, MultiDiscrete or MultiBinary space (Box bounds are not checked:
    policies' raw actions may leave them)."""
    if isinstance(space, gym.spaces.Discrete):
        low, high = int(space.start), int(space.start) + int(space.n) - 1
    elif isinstance(space, gym.spaces.MultiDiscrete):
        low, high = np.asarray(space.start), np.asarray(space.start) + np.asarray(space.nvec) - 1
    elif isinstance(space, gym.spaces.MultiBinary):
        low, high = 0, 1
    else:
        return
    if values.size and not (np.all(values >= low) and np.all(values <= high)):
        raise MinariError(f"{what} hold values outside the environment's space {space}")


def _write_dataset(dataset_id: str, obs_space, act_space, env_spec, buffers, metadata, episode_meta) -> Path:
    """Write the dataset in a hidden folder of Minari's data folder, then rename it into place."""
    root = datasets_folder()
    target = root / dataset_id
    if target.exists():
        raise MinariError(f"a Minari dataset {dataset_id} already exists in {root}; choose another name or "
                          "a higher version (-v1, -v2, ...)")
    partial = root / f".rlhf-export-{uuid.uuid4().hex[:12]}"
    try:
        partial.mkdir(parents=True)
        storage = MinariStorage.new(partial / "data", observation_space=obs_space, action_space=act_space,
                                    env_spec=env_spec, jpeg_encoding=False)
        storage.update_metadata({**metadata, "minari_version": minari.__version__})
        storage.update_episodes(buffers)
        storage.update_episode_metadata(episode_meta)
        namespace = parse_dataset_id(dataset_id)[0]
        if namespace is not None and namespace not in list_local_namespaces():
            create_namespace(namespace)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(partial, target)  # fails if the target appeared meanwhile: nothing is overwritten
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


# ------------------------------------------------------------------------------- import
@dataclasses.dataclass
class _Episode:
    trajectory: Trajectory
    index: int


def read_minari(dataset_id: str, *, env_id: str | None = None) -> tuple[str, list[_Episode], int]:
    """Check and read a local dataset: ``(env id, episodes as trajectories, empty episodes skipped)``.
    Writes nothing; :class:`MinariError` names the first problem."""
    dataset_id = check_dataset_id(dataset_id)
    data_path = datasets_folder() / dataset_id / "data"
    if not data_path.is_dir():
        raise MinariError(f"there is no Minari dataset {dataset_id} in {datasets_folder()} (the workbench never "
                          f"downloads: `minari download {dataset_id}` fetches one from the hub)")
    meta = _raw_metadata(data_path, dataset_id)
    recorded_in = _recorded_env(meta, dataset_id)
    if env_id:
        if recorded_in and recorded_in != env_id.rpartition(":")[2]:
            raise MinariError(f"the dataset {dataset_id} was recorded in {recorded_in}, not {env_id}")
    elif recorded_in:
        env_id = recorded_in
    else:
        raise MinariError(f"the dataset {dataset_id} names no environment; say which one it was recorded in "
                          "(--env-id)")
    try:
        env = make_env(env_id, render=False)
    except EnvError as exc:
        raise MinariError(f"the dataset's environment {env_id} cannot be made here: {exc}") from exc
    try:
        obs_space, act_space = env.observation_space, env.action_space
        fps = int(env.metadata.get("render_fps") or 30)
    finally:
        close_env(env)
    dataset = _load(dataset_id)
    for what, theirs, ours in (("observations", dataset.observation_space, obs_space),
                               ("actions", dataset.action_space, act_space)):
        if not isinstance(ours, _SPACES):
            raise MinariError(f"{env_id} has {type(ours).__name__} {what}; the workbench stores Box, Discrete, "
                              "MultiDiscrete and MultiBinary spaces")
        if not _same_space(theirs, ours):
            raise MinariError(f"the dataset's {what} are {theirs}, but {env_id}'s are {ours}: it was recorded "
                              "in another environment")
    episodes, skipped = [], 0
    for index, episode, seed in _episodes(dataset, dataset_id):
        where = f"episode {index} of {dataset_id}"
        rewards = np.asarray(episode.rewards, dtype=np.float64).reshape(-1)
        T = len(rewards)
        if T == 0:
            skipped += 1
            continue
        obs = _checked(episode.observations, obs_space, T + 1, f"{where}: its observations")
        actions = _checked(episode.actions, act_space, T, f"{where}: its actions")
        ends = {}
        for field in ("terminations", "truncations"):
            values = np.asarray(getattr(episode, field)).reshape(-1)
            if len(values) != T:
                raise MinariError(f"{where} has {len(values)} {field} for {T} rewards")
            ends[field] = values.astype(bool)
        if not np.all(np.isfinite(rewards)):
            raise MinariError(f"{where} has rewards that are not finite numbers")
        episodes.append(_Episode(Trajectory(
            env_id=env_id, seed=seed, observations=obs.astype(np.float32), actions=actions,
            rewards=rewards.astype(np.float32), frames=None, fps=fps,
            source={"kind": IMPORT_SOURCE, "format": "minari", "dataset_id": dataset_id, "episode_id": index},
            terminated=bool(ends["terminations"][-1])), index))
    if not episodes:
        raise MinariError(f"the dataset {dataset_id} holds no episode with a step")
    return env_id, episodes, skipped


def _raw_metadata(data_path: Path, dataset_id: str) -> dict:
    """The dataset's metadata.json, with the keys minari would otherwise fill by making the environment
    from the stored entry point (which must not run)."""
    try:
        meta = json.loads((data_path / "metadata.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MinariError(f"the dataset {dataset_id} has no metadata.json in {data_path}") from None
    except (OSError, ValueError) as exc:
        raise MinariError(f"the metadata of the dataset {dataset_id} cannot be read: {exc}") from exc
    if not isinstance(meta, dict):
        raise MinariError(f"the metadata of the dataset {dataset_id} is not a JSON object")
    missing = [k for k in ("dataset_id", "minari_version", "data_format", "observation_space", "action_space")
               if k not in meta]
    if missing:
        raise MinariError(f"the metadata of the dataset {dataset_id} lacks {', '.join(missing)}")
    if meta["dataset_id"] != dataset_id:
        raise MinariError(f"the dataset in the folder {dataset_id} calls itself {meta['dataset_id']!r}")
    return meta


def _recorded_env(meta: dict, dataset_id: str) -> str | None:
    """The env id in the metadata's env_spec (None without one); an id naming a module is refused."""
    raw = meta.get("env_spec")
    if raw is None:
        return None
    try:
        spec = json.loads(raw) if isinstance(raw, str) else raw
        env_id = spec["id"]
    except (ValueError, TypeError, KeyError) as exc:
        raise MinariError(f"the environment spec of the dataset {dataset_id} cannot be read") from exc
    if not isinstance(env_id, str) or not env_id or ":" in env_id:
        raise MinariError(f"the dataset {dataset_id} names the environment {str(env_id)[:80]!r}, which is not a "
                          "registered environment id")
    return env_id


def _load(dataset_id: str):
    try:
        return minari.load_dataset(dataset_id, download=False)
    except ImportError as exc:
        raise MinariError(f"the dataset {dataset_id} needs a package that is not installed ({exc})") from exc
    except (ValueError, KeyError, TypeError, AssertionError, OSError, NotImplementedError) as exc:
        raise MinariError(f"the dataset {dataset_id} cannot be read: {exc or type(exc).__name__}") from exc


def _episodes(dataset, dataset_id: str):
    """``(index, EpisodeData, seed or None)`` of each episode; a missing field is a :class:`MinariError`."""
    indices = [int(i) for i in dataset.episode_indices]
    index = None
    try:
        metadata = list(dataset.storage.get_episode_metadata(indices))
        for position, index in enumerate(indices):
            episode = next(iter(dataset.iterate_episodes([index])))
            seed = metadata[position].get("seed")
            yield index, episode, None if seed is None else int(seed)
    except KeyError as exc:
        name = re.search(r"object '([^']+)' doesn't exist", str(exc))
        field = repr(name.group(1)) if name else "a field"
        where = f"episode {index}" if index is not None else "an episode"
        raise MinariError(f"{where} of {dataset_id} has no {field} (a Minari episode needs "
                          f"{', '.join(_FIELDS)})") from exc
    except (ValueError, TypeError, AssertionError, OSError) as exc:
        raise MinariError(f"the episodes of {dataset_id} cannot be read: {exc or type(exc).__name__}") from exc


def _same_space(theirs: gym.Space, ours: gym.Space) -> bool:
    if type(theirs) is not type(ours):
        return False
    if isinstance(ours, gym.spaces.Discrete):
        return int(theirs.n) == int(ours.n) and int(theirs.start) == int(ours.start)
    if isinstance(ours, gym.spaces.MultiDiscrete):
        return np.array_equal(theirs.nvec, ours.nvec)
    return tuple(theirs.shape or ()) == tuple(ours.shape or ())


def _checked(values, space: gym.Space, n: int, what: str) -> np.ndarray:
    """An episode's observations or actions as a float array of n rows of ``space``'s shape."""
    if isinstance(values, (dict, tuple, list)) and not isinstance(values, np.ndarray):
        raise MinariError(f"{what} are not one array (Dict or Tuple spaces are not supported)")
    values = np.asarray(values)
    shape = tuple(space.shape or ())
    if values.shape != (n, *shape):
        raise MinariError(f"{what} have shape {values.shape}; expected {(n, *shape)}")
    if not np.issubdtype(values.dtype, np.number) and values.dtype != np.bool_:
        raise MinariError(f"{what} are not numbers ({values.dtype})")
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise MinariError(f"{what} hold values that are not finite numbers")
    _check_discrete(values, space, what)
    return values


def import_minari(project_or_path: Project | str | os.PathLike, dataset_id: str, *, env_id: str | None = None,
                  ranking: str = "none") -> MinariImport:
    """Store a local Minari dataset's episodes as the project's trajectories (and optionally a ranking of
    them); see the module docstring. ``project_or_path``: an open :class:`Project` (left open) or a folder,
    opened, or created when it does not exist, only once the dataset has passed the checks."""
    if ranking not in RANKINGS:
        raise MinariError(f"ranking must be one of {', '.join(RANKINGS)}; got {ranking!r}")
    dataset_id = check_dataset_id(dataset_id)
    env_id, episodes, skipped = read_minari(dataset_id, env_id=env_id)
    groups = _ranking_groups(episodes, ranking, dataset_id)
    return write_into(project_or_path, lambda project, created: _store(
        project, dataset_id, env_id, episodes, skipped, ranking, groups, created=created))


def _ranking_groups(episodes: list[_Episode], ranking: str, dataset_id: str) -> list[list[int]] | None:
    """Positions (indices into ``episodes``) grouped worst -> best, or None for no ranking."""
    if ranking == "none":
        return None
    if len(episodes) < 2:
        raise MinariError(f"a ranking needs at least two episodes; {dataset_id} has {len(episodes)}")
    if len(episodes) > MAX_RANKED_EPISODES:
        raise MinariError(f"{dataset_id} has {len(episodes)} episodes; a ranking takes at most "
                          f"{MAX_RANKED_EPISODES} (import with ranking 'none', then rank a subset)")
    if ranking == "order":
        return [[i] for i in range(len(episodes))]
    by_return: dict[float, list[int]] = {}
    for i, e in enumerate(episodes):
        by_return.setdefault(e.trajectory.true_return, []).append(i)
    if len(by_return) < 2:
        raise MinariError(f"every episode of {dataset_id} has the same return: there is nothing to rank by "
                          "(import with ranking 'none' or 'order')")
    return [by_return[r] for r in sorted(by_return)]


def _store(project: Project, dataset_id: str, env_id: str, episodes: list[_Episode], skipped: int, ranking: str,
           groups: list[list[int]] | None, *, created: bool) -> MinariImport:
    present = project.conn.execute(
        "SELECT id FROM items WHERE kind = 'trajectory' AND deleted_at IS NULL AND source = ? "
        "AND json_extract(params_json, '$.dataset_id') = ? ORDER BY id", [IMPORT_SOURCE, dataset_id]).fetchall()
    if present:
        ids = [r[0] for r in present]
        shown = f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else str(ids[0])
        raise MinariError(f"the dataset {dataset_id} is already in this project (trajectories {shown}); "
                          "nothing was imported")
    ids: list[int] = []
    files: list[Path] = []
    ranking_id = None
    try:
        with project.db.atomic():
            for episode in episodes:
                tid = save_trajectory(project, episode.trajectory)
                ids.append(tid)
                files.append(project.abspath(project.get_item(tid)["data_path"]))
            if groups is not None:
                labeller = project.ensure_labeller(f"minari:{dataset_id}", kind="synthetic",
                                                   params={"dataset_id": dataset_id, "ranking": ranking})
                ranking_id = project.add_ranking(
                    [[ids[i] for i in group] for group in groups], labeller_id=labeller,
                    source="synthetic" if ranking == "return" else "auto",
                    note=f"minari {dataset_id}: " + ("by return" if ranking == "return" else "in dataset order"))
    except BaseException:
        for path in files:
            path.unlink(missing_ok=True)
        raise
    return MinariImport(dataset_id=dataset_id, project=project.folder, env_id=env_id, trajectory_ids=ids,
                        steps=sum(e.trajectory.length for e in episodes), ranking=ranking, ranking_id=ranking_id,
                        skipped_empty=skipped, project_created=created)
