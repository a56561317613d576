"""The third benchmark's objects: pictograms (chess pieces, a card suit, umbrella, airplane,
anchor, a pointing hand, ...) from the DejaVu Sans font, with exact masks at any pose.

The outlines are the font's own TrueType contours (quadratic B-splines, font units, y up),
copied here from DejaVu Sans 2.37 (``/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf``;
Bitstream Vera licence, which allows redistribution) so that generating needs neither the
font file nor a rasteriser, whose version would change the pixels. Each contour is
flattened into a polygon (every quadratic arc into ``_ARC_STEPS`` segments) in unit
coordinates (u right, v down, the bounding box centred on the origin, circumradius 1), and a
pixel is object when the non-zero winding number of its centre is not 0 (the font's fill
rule), so masks are exact at any pose through the shapes' machinery
(:func:`robustft.synth.shapes.pose_mask`): the mask is the object, as for the shapes.

Unlike the shapes and letters, the pictograms carry the class only in a detailed silhouette
(the third benchmark draws no class markings). No pictogram is a rotation of another (the
rotation sweep turns them by up to 315 degrees), and none is a shape of ``shapes``.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from robustft.synth.shapes import Region, pose_mask

__all__ = ["PICTOGRAM_CODEPOINTS", "PICTOGRAM_NAMES", "pictogram_geometry", "pictogram_mask",
           "pictogram_polygons"]

_ARC_STEPS = 6  # segments per quadratic arc: under 0.1 px from the curve at 64 px

# name: (Unicode code point, the glyph's contours). A contour is its points in font units,
# "x,y" on the curve or "x,y*" off it (a quadratic control point), contours split by "|".
_OUTLINES: dict[str, tuple[int, tuple[str, ...]]] = {
    "knight": (0x265E, (
        "790,1254 827,1277* 827,1316 827,1341* 797,1398* 797,1420 797,1466* 855,1496 940,1415* "
        "955,1326* 955,1313 955,1266* 921,1254 925,1254 925,1253* 923,1253 1459,913* 1504,0 534,0 "
        "521,56* 521,114 521,274* 926,557* 926,670 926,678* 925,685 859,518* 742,518 742,518* "
        "732,518 642,372* 539,372 535,372* 532,372 580,476 473,396 359,424* 332,507 420,736* "
        "420,926 420,953* 418,979 466,1088* 565,1192 568,1202* 568,1211 568,1239* 523,1265* "
        "523,1300 523,1337* 543,1403 647,1376* 703,1254 | 533,999 533,983 537,953* 545,953 "
        "566,953 635,953* 635,1002 635,1036* 678,1084 672,1084 576,1084* 539,1020 | 424,549 "
        "424,525 424,496* 452,496 462,496 534,511* 534,564 527,598 465,598* | 922,1174 974,1085 "
        "1349,816* 1355,52 1432,52 1387,902* "
    )),
    "rook": (0x265C, (
        "1238,1156 1238,1250 598,1250 598,1156 | 1312,179 1312,290 524,290 524,179 | 776,1494 "
        "1053,1494 1053,1339 1224,1339 1224,1494 1494,1494 1494,1332 1379,1332 1379,1188 "
        "1287,1038 1287,453 1379,304 1379,161 1494,161 1494,-2 341,-2 341,161 456,161 456,304 "
        "549,456 550,456 550,1037 549,1037 456,1188 456,1332 341,1332 341,1494 606,1494 606,1339 "
        "776,1339 | 1439,54 1439,109 397,109 397,54 "
    )),
    "club": (0x2663, (
        "919,1492 1133,1492* 1234,1265 1247,1213* 1250,1157 1250,1040* 1130,880 1070,820 1073,820 "
        "1147,848* 1231,848 1250,848 1488,848* 1584,646 1607,580* 1607,520 1607,315* 1398,211 "
        "1358,199* 1287,193 1045,193* 944,467 941,467 941,458 941,115* 1023,6 1023,0 815,0 809,6 "
        "894,134* 894,467 894,470 891,470 791,193* 546,193 355,193* 253,394 228,462* 228,520 "
        "228,753* 474,836 540,848* 591,848 600,848 686,848* 764,820 767,820 767,823 683,894* "
        "654,963 594,1073* 594,1154 594,1168 594,1369* 809,1473 880,1492* "
    )),
    "heart": (0x2665, (
        "552,1492 755,1492* 871,1257 913,1164* 915,1115 918,1115 953,1277* 1045,1384 1153,1492* "
        "1288,1492 1497,1492* 1623,1268 1655,1185* 1655,1112 1655,862* 1447,635 918,0 912,0 "
        "350,689 182,894* 182,1112 182,1323* 381,1447 465,1492* "
    )),
    "umbrella": (0x2602, (
        "907,1493 965,1493 971,1487 971,1362 973,1362 1413,1362* 1693,876 1736,790* 1736,777 "
        "1736,769 1734,769 1712,784* 1693,830 1658,854* 1601,854 1557,854 1407,854* 1295,753 "
        "1295,702 1295,687* 1287,685 1254,751 1103,812* 967,812 967,127 967,26* 861,2 831,0 "
        "740,0* 703,96 701,124 701,150 707,156 750,156 755,150 755,138 766,37* 828,37 838,37 "
        "893,37* 913,94 919,136 919,812 708,812* 622,751 605,694* 591,694 584,700 584,712 591,763 "
        "587,763 520,827* 323,854 256,854 157,854* 123,793 103,775 100,775 100,777 158,921* "
        "350,1139 589,1362* 901,1362 901,1487 "
    )),
    "airplane": (0x2708, (
        "148,727 148,727* 148,767 148,767* 184,772 184,772* 120,990 120,990* 220,990 220,990* "
        "366,789 512,802* 798,812 745,1088* 574,1450 574,1450* 697,1450 697,1450* 812,1300 "
        "812,1300* 960,1300 960,1300* 960,1220 960,1220* 874,1220 874,1220* 974,1090 974,1090* "
        "1128,1090 1128,1090* 1128,1010 1128,1010* 1035,1010 1035,1010* 1187,812 1187,812* "
        "1451,812 1521,812* 1569,786 1601,769* 1601,725* 1569,708 1521,682* 1451,682 1451,682* "
        "1187,682 1187,682* 1035,484 1035,484* 1128,484 1128,484* 1128,404 1128,404* 974,404 "
        "974,404* 874,274 874,274* 960,274 960,274* 960,194 960,194* 812,194 812,194* 697,44 "
        "697,44* 574,44 745,396* 798,682 512,693* 366,705 366,705* 220,504 220,504* 120,504 "
        "120,504* 184,722 184,722* "
    )),
    "anchor": (0x2693, (
        "784,1238 784,1199* 823,1127* 895,1088* 933,1088 973,1088* 1044,1127* 1084,1199* "
        "1084,1238 1084,1278* 1043,1350* 972,1389* 933,1389 896,1389* 824,1350* 784,1278* | "
        "1011,-16 1011,-17 1003,-17 966,-20* 927,-20 924,-20* 921,-19 921,-17 914,-17 914,-19 "
        "907,-19 738,-19* 429,77* 343,165 327,182* 314,198 227,133 198,464 505,340 418,276 "
        "418,276* 424,270 497,182* 629,133 738,93* 855,86 855,810 480,810 480,939 855,939 855,990 "
        "829,998* 804,1012 742,1046* 674,1170* 674,1306* 743,1431* 868,1499* 933,1499 999,1499* "
        "1123,1431* 1194,1306* 1194,1170* 1125,1046* 1064,1012 1037,998* 1011,989 1011,939 "
        "1376,939 1376,810 1011,810 1011,89 1111,99* 1205,133 1337,182* 1411,270 1413,273* "
        "1416,276 1329,340 1637,464 1607,133 1520,198 1508,182* 1491,165 1405,77* 1250,28 "
        "1135,-7* "
    )),
    "hand": (0x261B, (
        "172,1059 172,1103* 234,1165* 276,1165 650,1165 693,1165* 723,1134 740,1117* 748,1095 "
        "1560,1095 1586,1095* 1635,1069* 1665,1018* 1665,991 1665,947* 1603,886* 1560,886 795,886 "
        "797,876 1135,876 1157,874* 1177,863 1202,849* 1230,799* 1230,773 1230,729* 1169,668* "
        "1101,668 844,668 845,658 1024,658 1051,658* 1101,630* 1129,580* 1129,553 1129,509* "
        "1099,479 1074,453* 1026,451 891,451 895,439 949,439 968,436* 986,426 1010,413* 1039,363* "
        "1039,336 1039,293* 978,231* 935,231 247,231 "
    )),
    "notes": (0x266B, (
        "765,1493 1456,1291 1459,1287 1459,-12 1459,-167* 1267,-209 1213,-209 1000,-209* 1000,-45 "
        "1000,-41 1000,85* 1177,107 1216,110 1302,110* 1383,52 1383,1087 835,1256 835,195 835,58* "
        "685,2 618,-6 592,-6 376,-6* 376,149 376,156 376,278* 546,312 589,316 678,316* 758,249 "
        "758,1484 "
    )),
    "flag": (0x2691, (
        "420,1444 345,1444 344,1497 614,1497 614,1444 538,1444 538,1418 591,1426* 642,1426 "
        "836,1426* 1007,1306 1176,1214* 1337,1214 1415,1214* 1490,1235 1490,480 1384,452* "
        "1282,452 1111,452* 794,606* 666,606 586,606* 516,576 516,6 420,6 "
    )),
}
#: Pictogram names in label order (the third benchmark's classes are the first K).
PICTOGRAM_NAMES: tuple[str, ...] = tuple(_OUTLINES)
#: The Unicode code point each pictogram is drawn from (U+265E BLACK CHESS KNIGHT, ...).
PICTOGRAM_CODEPOINTS: dict[str, int] = {name: code for name, (code, _) in _OUTLINES.items()}


def _flatten(contour: str) -> np.ndarray:
    """The polygon (n, 2) of one TrueType contour: on-curve points joined by lines, an
    off-curve point the control point of a quadratic arc, and between two consecutive
    off-curve points the implied on-curve point at their midpoint (the TrueType rule)."""
    points = []
    for token in contour.split():
        off = token.endswith("*")
        x, y = token.rstrip("*").split(",")
        points.append((float(x), float(y), not off))
    if not any(on for _x, _y, on in points):  # all off-curve: start at an implied point
        (x0, y0, _), (x1, y1, _) = points[0], points[1]
        points.insert(1, ((x0 + x1) / 2, (y0 + y1) / 2, True))
    start = next(i for i, (_x, _y, on) in enumerate(points) if on)
    points = points[start:] + points[:start]
    expanded = []
    for i, (x, y, on) in enumerate(points):
        expanded.append((x, y, on))
        nx, ny, non = points[(i + 1) % len(points)]
        if not on and not non:
            expanded.append(((x + nx) / 2, (y + ny) / 2, True))
    t = (np.arange(1, _ARC_STEPS + 1) / _ARC_STEPS)[:, None]
    current = np.array(expanded[0][:2])
    polygon = [current]
    i, n = 1, len(expanded)
    while i <= n:
        x, y, on = expanded[i % n]
        if on:
            current = np.array([x, y])
            polygon.append(current)
            i += 1
        else:
            end = np.array(expanded[(i + 1) % n][:2])
            arc = (1 - t) ** 2 * current + 2 * (1 - t) * t * np.array([x, y]) + t**2 * end
            polygon.extend(arc)
            current = end
            i += 2
    return np.array(polygon[:-1])  # the last point closes the contour onto the first


@cache
def pictogram_polygons(name: str) -> tuple[np.ndarray, ...]:
    """The pictogram's contours as polygons in unit coordinates (u right, v down, bounding
    box centred on the origin, farthest vertex at distance 1)."""
    if name not in _OUTLINES:
        raise ValueError(f"unknown pictogram {name!r}; known: {', '.join(PICTOGRAM_NAMES)}")
    polygons = [_flatten(c) for c in "".join(_OUTLINES[name][1]).split("|")]
    points = np.concatenate(polygons)
    centre = (points.min(0) + points.max(0)) / 2
    polygons = [(p - centre) * np.array([1.0, -1.0]) for p in polygons]  # font y points up
    radius = max(float(np.hypot(p[:, 0], p[:, 1]).max()) for p in polygons)
    return tuple(p / radius for p in polygons)


def _winding_region(polygons: tuple[np.ndarray, ...]) -> Region:
    """Points whose non-zero winding number around the polygons is not 0: every edge that
    crosses the ray from a point to the right counts +1 going up and -1 going down
    (vectorised over points and edges, in chunks of points)."""
    edges = []
    for polygon in polygons:
        x0, y0 = polygon[:, 0], polygon[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        keep = y0 != y1  # horizontal edges never cross a horizontal ray
        edges.append(np.stack([x0[keep], y0[keep], x1[keep], y1[keep]]))
    ax, ay, bx, by = (e[None, None, :] for e in np.concatenate(edges, axis=1))
    points = np.concatenate(polygons)
    (umin, vmin), (umax, vmax) = points.min(0), points.max(0)

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        result = np.zeros(u.shape, dtype=bool)
        # only the points within the outline's box can be inside it
        near = np.flatnonzero((u >= umin) & (u <= umax) & (v >= vmin) & (v <= vmax))
        pu, pv = u.reshape(-1), v.reshape(-1)
        flat = result.reshape(-1)
        for start in range(0, len(near), 2048):
            idx = near[start:start + 2048]
            cu, cv = pu[idx][None, :, None], pv[idx][None, :, None]
            side = (bx - ax) * (cv - ay) - (cu - ax) * (by - ay)
            up = (ay <= cv) & (by > cv) & (side > 0)
            down = (ay > cv) & (by <= cv) & (side < 0)
            flat[idx] = (up.sum(axis=2) - down.sum(axis=2))[0] != 0
        return result

    return inside


@cache
def _region(name: str) -> Region:
    return _winding_region(pictogram_polygons(name))


@cache
def pictogram_geometry(name: str) -> tuple[float, float]:
    """(area, circumradius) of a pictogram in unit coordinates: the area by the shoelace
    formula over its contours (holes wind the other way, so they subtract), the radius 1 by
    construction."""
    area = 0.0
    for p in pictogram_polygons(name):
        area += 0.5 * float(np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1]))
    return abs(area), 1.0


def pictogram_mask(
    name: str, size: int, area: float, x: float, y: float, rotation: float
) -> np.ndarray:
    """Exact boolean mask (size x size) of a pictogram: ``area`` (its pixels as a fraction of
    the image, before clipping), centre ``x``, ``y`` and ``rotation`` as for the shapes."""
    return pose_mask(_region(name), pictogram_geometry(name)[0], size, area, x, y, rotation)
