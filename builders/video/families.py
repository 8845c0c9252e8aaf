"""The frame-prediction task families (MetaMorph's), as pure functions of (frame count, interval, rng).

Part of the video builder (registers no builder), used by `builders/video/pred.py`. From N frames sampled
`interval` seconds apart, a family picks a run of them (MetaMorph: a random start < end) and says which frames the
human turn shows and which the gpt turn must produce, in the order each turn needs them:

| family | human shows | gpt produces |
| --- | --- | --- |
| `next` | the first frame of the run | the rest of the run |
| `split` | the first s frames | the remaining frames |
| `reverse` | the last frame | the earlier frames, latest first |
| `alternate` | frames 0, 2, 4, … of the run | frames 1, 3, … |
| `reorder` | the run shuffled | the run in order |
| `interval` | the run | no frame: it states the interval |
| `next_k` | the run | the next 1–3 frames after it |
| `two_frames` (N = 2) | frame 0 | frame 1, `interval` later |

The wording is ours, several phrasings per family; `{t}` is the interval ("1.3 seconds").
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mmdata.core.schema import IMAGE

FAMILIES = ("next", "split", "reverse", "alternate", "reorder", "interval", "next_k")
TWO_FRAMES = "two_frames"

# (human, gpt). Fields: {seen} / {made} the image runs; {n_seen} / {n_made} their counts and {frames_seen} /
# {frames_made} the same with "frame(s)"; {total} the frames of the run; {t} the interval.
PHRASINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "next": (
        ("Here is the opening frame of a video: {seen}. Can you show the next {frames_made}, {t} apart?",
         "Sure. The next {frames_made}, {t} apart: {made}"),
        ("This clip starts like this {seen}. Generate what comes next: {frames_made}, one every {t}.",
         "Here is what comes next: {made}"),
        ("{seen} Continue this video for {frames_made}, spaced {t} apart.", "Continuing the video: {made}"),
    ),
    "split": (
        ("These are the first {frames_seen} of a {total}-frame clip, {t} apart: {seen}. Show the remaining "
         "{frames_made}.", "The remaining {frames_made}: {made}"),
        ("I watched {frames_seen} of a video sampled every {t}: {seen}. Predict the {frames_made} that follow.",
         "Here is how it goes on: {made}"),
        ("{seen} Complete this {total}-frame sequence (frames {t} apart) with the {n_made} missing at the end.",
         "Completed: {made}"),
    ),
    "reverse": (
        ("This is the last frame of a {total}-frame clip, {t} between frames: {seen}. Work backwards: show the "
         "{frames_made} before it, latest first.", "Going back in time, {t} per step: {made}"),
        ("{seen} This is how a video ends. Rewind it by {frames_made}, {t} apart, starting from the most recent.",
         "Rewinding: {made}"),
        ("Given the final frame {seen}, reconstruct the previous {frames_made} in reverse order, each {t} earlier "
         "than the one before.", "From latest to earliest: {made}"),
    ),
    "alternate": (
        ("Every other frame of a {total}-frame video is shown here, frames {t} apart: {seen}. Fill in the "
         "{frames_made} in between.", "The {frames_made} in between, in order: {made}"),
        ("{seen} These are the odd-numbered frames of a clip sampled every {t}. Generate the missing ones.",
         "The missing frames: {made}"),
        ("I only have alternate frames of this {total}-frame sequence ({t} apart): {seen}. Show the skipped "
         "{frames_made}.", "Skipped, in order: {made}"),
    ),
    "reorder": (
        ("These {total} frames from a video, {t} apart, are shuffled: {seen}. Put them back in order.",
         "In the right order: {made}"),
        ("{seen} The order of these {total} frames got mixed up (they were taken {t} apart). Show them in the order "
         "they happened.", "In chronological order: {made}"),
        ("Sort these shuffled video frames ({t} apart) into their original sequence: {seen}", "Sorted: {made}"),
    ),
    "interval": (
        ("Here are {total} frames from a video: {seen}. How much time passes between consecutive frames?",
         "About {t} pass between consecutive frames."),
        ("{seen} These {total} frames are evenly spaced in time. Estimate the spacing.",
         "They look about {t} apart."),
        ("Look at this sequence of {total} frames: {seen}. What is the time step between them?",
         "Roughly {t} between each frame and the next."),
    ),
    "next_k": (
        ("Here is a sequence of frames, {t} apart: {seen}. Predict the next {frames_made}.",
         "The next {frames_made}: {made}"),
        ("{seen} What comes next in this sequence (one frame every {t})? Show {frames_made}.",
         "Next in the sequence: {made}"),
        ("Continue this image sequence, {t} per frame, with {frames_made}: {seen}", "Continuation: {made}"),
    ),
    TWO_FRAMES: (
        ("{seen} What will this scene look like {t} from now?", "{made}"),
        ("Here is a moment from a video: {seen}. Show the frame {t} later.", "{t} later: {made}"),
        ("{seen} Fast-forward {t}: what do we see?", "After {t}: {made}"),
        ("Given this frame {seen}, predict the scene {t} into the future.", "The predicted frame: {made}"),
    ),
}


@dataclass(frozen=True)
class Task:
    family: str
    human: str
    gpt: str
    seen: list[int]  # indices of the sampled frames the human turn shows, in placeholder order
    made: list[int]  # indices the gpt turn produces (generation targets), in placeholder order


def seconds(interval: float) -> str:
    return f"{interval:g} second{'' if interval == 1 else 's'}"


def _count(n: int) -> str:
    return f"{n} frame{'' if n == 1 else 's'}"


def make_task(n: int, interval: float, rng: random.Random, family: str | None = None) -> Task:
    """A task over `n` sampled frames (n >= 2): the given family (any of FAMILIES when n >= 3), or one drawn."""
    if n < 2:
        raise ValueError(f"frame prediction needs at least 2 frames, got {n}")
    if n == 2:
        family, seen, made = TWO_FRAMES, [0], [1]
    else:
        family = family or rng.choice(FAMILIES)
        seen, made = _frames(family, n, rng)
    human, gpt = rng.choice(PHRASINGS[family])
    fields = {"seen": IMAGE * len(seen), "made": IMAGE * len(made), "n_seen": len(seen), "n_made": len(made),
              "frames_seen": _count(len(seen)), "frames_made": _count(len(made)), "t": seconds(interval),
              "total": len(set(seen) | set(made))}
    return Task(family, human.format(**fields), gpt.format(**fields), seen, made)


def _frames(family: str, n: int, rng: random.Random) -> tuple[list[int], list[int]]:
    if family == "next_k":  # a run that leaves 1-3 frames after it (MetaMorph could draw none: a broken sample)
        start = rng.randint(0, n - 3)
        end = rng.randint(start + 1, n - 2)
        k = rng.randint(1, min(3, n - 1 - end))
        return list(range(start, end + 1)), list(range(end + 1, end + 1 + k))
    start = rng.randint(0, n - 2)
    run = list(range(start, rng.randint(start + 1, n - 1) + 1))
    if family == "next":
        return run[:1], run[1:]
    if family == "split":
        s = rng.randint(1, len(run) - 1)
        return run[:s], run[s:]
    if family == "reverse":
        return run[-1:], run[-2::-1]
    if family == "alternate":
        return run[::2], run[1::2]
    if family == "reorder":
        shuffled = run[:]
        while shuffled == run:  # a "shuffle" that changed nothing teaches nothing
            rng.shuffle(shuffled)
        return shuffled, run
    if family == "interval":
        return run, []
    raise ValueError(f"unknown frame-prediction family {family!r}; expected one of {FAMILIES}")
