"""Foreground mask -> people: morphological clean-up and connected components grouped into person blobs.

Background subtraction and segmentation models both hand over a per-pixel foreground mask; this module
turns it into `Detection`s, one per person-sized blob. A person often falls apart into pieces where the
clothes match the background (legs apart from the torso, a head above a collar), so components are
grouped when they overlap horizontally and are close vertically (people are upright), or touch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, width, height in pixels


@dataclass(frozen=True)
class Detection:
    box: Box
    mask: np.ndarray  # (h, w) uint8 0/255: the person's pixels inside `box`
    area: int  # foreground pixels


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Binary (H, W) uint8 -> opened (speckle removed) then closed (holes and cracks filled) 0/255 mask.

    The closing kernel grows with the frame height so a 720p frame gets the same relative clean-up as a
    240p one.
    """
    side = max(3, round(mask.shape[0] / 48) | 1)  # odd: 5 at 240 rows, 7 at 360
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _ellipse(3))
    return cv2.morphologyEx(opened, cv2.MORPH_CLOSE, _ellipse(side))


def _ellipse(side: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _belong_together(a: np.ndarray, b: np.ndarray) -> bool:
    """Component boxes (x, y, w, h) of one upright person: stacked with overlapping columns, or near."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    x_overlap = min(ax + aw, bx + bw) - max(ax, bx)
    y_gap = max(ay, by) - min(ay + ah, by + bh)
    if x_overlap > 0.25 * min(aw, bw) and y_gap < 0.25 * max(ah, bh):
        return True
    near = 0.1 * max(ah, bh)  # a limb broken off by a background of its colour stays this close
    return bool(x_overlap > -near and y_gap < near)


def find_people(mask: np.ndarray, min_area: int) -> list[Detection]:
    """Cleaned 0/255 (H, W) mask -> person detections of at least `min_area` pixels, largest first."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    # stats rows: [x, y, w, h, area]; row 0 is the background.
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= max(min_area // 8, 1)]
    parent = list(range(len(keep)))
    for i in range(len(keep)):
        for j in range(i + 1, len(keep)):
            if _belong_together(stats[keep[i], :4], stats[keep[j], :4]):
                parent[_find(parent, i)] = _find(parent, j)
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(keep):
        groups.setdefault(_find(parent, i), []).append(label)
    people = []
    for members in groups.values():
        area = int(stats[members, cv2.CC_STAT_AREA].sum())
        if area < min_area:
            continue
        x0 = int(stats[members, cv2.CC_STAT_LEFT].min())
        y0 = int(stats[members, cv2.CC_STAT_TOP].min())
        x1 = int((stats[members, cv2.CC_STAT_LEFT] + stats[members, cv2.CC_STAT_WIDTH]).max())
        y1 = int((stats[members, cv2.CC_STAT_TOP] + stats[members, cv2.CC_STAT_HEIGHT]).max())
        crop = np.isin(labels[y0:y1, x0:x1], members).astype(np.uint8) * np.uint8(255)  # (h, w)
        people.append(Detection((x0, y0, x1 - x0, y1 - y0), crop, area))
    people.sort(key=lambda d: d.area, reverse=True)
    return people


def merge(a: Detection, b: Detection) -> Detection:
    """One detection from two pieces of the same person (their masks united in the joint box)."""
    x0, y0 = min(a.box[0], b.box[0]), min(a.box[1], b.box[1])
    x1 = max(a.box[0] + a.box[2], b.box[0] + b.box[2])
    y1 = max(a.box[1] + a.box[3], b.box[1] + b.box[3])
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)  # (h, w) of the joint box
    for d in (a, b):
        x, y, w, h = d.box
        region = mask[y - y0 : y - y0 + h, x - x0 : x - x0 + w]
        np.maximum(region, d.mask, out=region)
    return Detection((x0, y0, x1 - x0, y1 - y0), mask, a.area + b.area)
