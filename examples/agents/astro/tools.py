"""Tools for an astronomer's everyday questions: distances, sizes, units.

    llmkit agent smollm2 --tools examples/agents/astro/tools.py "How far is Vega in light-years?"

The facts are rounded values from public catalogs: stellar distances from Hipparcos/Gaia
parallaxes (Betelgeuse: Joyce et al. 2020), stellar radii from interferometry as listed by SIMBAD
and Wikipedia, planetary mean radii and semi-major axes from NASA's planetary fact sheets, and the
IAU's exact astronomical unit and parsec.
"""

from __future__ import annotations

import math
from typing import Literal

Unit = Literal["km", "AU", "ly", "pc"]

AU_KM = 149_597_870.7  # IAU 2012, exact
PC_AU = 648_000 / math.pi  # IAU 2015: 1 pc = 648000/pi AU
LY_KM = 9_460_730_472_580.8  # the Julian year times c
KM = {"km": 1.0, "AU": AU_KM, "ly": LY_KM, "pc": PC_AU * AU_KM}
SUN_RADIUS_KM = 695_700.0  # IAU 2015 nominal

# The system prompt the agent runs with, in benchmarks/agent_eval.py and in the training rows
# make_train.py writes: a fine-tune sees exactly the prompt it is later run with.
SYSTEM = (
    "You are an astronomer's assistant. Answer with the tools: call the one tool that gives the "
    "answer, then give the number it returned, with its unit."
)

# name: (distance, its unit, mean radius in km). Stars from the Sun; planets as semi-major axes.
BODIES: dict[str, tuple[float, str, float]] = {
    "sun": (1.0, "AU", SUN_RADIUS_KM),
    "moon": (384_400.0, "km", 1_737.4),
    "mercury": (0.387, "AU", 2_439.7),
    "venus": (0.723, "AU", 6_051.8),
    "earth": (1.0, "AU", 6_371.0),
    "mars": (1.524, "AU", 3_389.5),
    "jupiter": (5.203, "AU", 69_911.0),
    "saturn": (9.537, "AU", 58_232.0),
    "uranus": (19.19, "AU", 25_362.0),
    "neptune": (30.07, "AU", 24_622.0),
    "proxima centauri": (4.246, "ly", 0.1542 * SUN_RADIUS_KM),
    "alpha centauri a": (4.37, "ly", 1.2175 * SUN_RADIUS_KM),
    "sirius": (8.60, "ly", 1.711 * SUN_RADIUS_KM),
    "procyon": (11.46, "ly", 2.048 * SUN_RADIUS_KM),
    "altair": (16.73, "ly", 1.63 * SUN_RADIUS_KM),
    "vega": (25.04, "ly", 2.36 * SUN_RADIUS_KM),
    "arcturus": (36.7, "ly", 25.4 * SUN_RADIUS_KM),
    "capella": (42.9, "ly", 11.98 * SUN_RADIUS_KM),
    "aldebaran": (65.3, "ly", 44.13 * SUN_RADIUS_KM),
    "polaris": (433.0, "ly", 37.5 * SUN_RADIUS_KM),
    "betelgeuse": (548.0, "ly", 764.0 * SUN_RADIUS_KM),
    "rigel": (860.0, "ly", 78.9 * SUN_RADIUS_KM),
}


def _rounded(value: float) -> float:
    """Five significant digits: what a catalog fact supports, and short for a small model."""
    return float(f"{value:.5g}")


def _body(name: str) -> tuple[float, str, float]:
    key = " ".join(name.strip().lower().split())
    if key not in BODIES:
        known = ", ".join(sorted(BODIES))
        raise ValueError(f"unknown body {name!r}; known: {known}")
    return BODIES[key]


def convert_distance(value: float, from_unit: Unit, to_unit: Unit) -> float:
    """Convert a distance between kilometres, astronomical units, light-years and parsecs.

    Args:
        value: The distance to convert.
        from_unit: The unit of the value: km, AU, ly or pc.
        to_unit: The unit wanted: km, AU, ly or pc.
    """
    return _rounded(value * KM[from_unit] / KM[to_unit])


def distance_to(body: str, unit: Unit = "ly") -> float:
    """The distance to a bright star (from the Sun), a planet (its mean distance from the Sun)
    or the Moon (from the Earth).

    Args:
        body: The name of the star, planet or Moon, for example "Vega" or "Mars".
        unit: The unit of the answer: km, AU, ly or pc.
    """
    distance, unit_of, _ = _body(body)
    return _rounded(distance * KM[unit_of] / KM[unit])


def radius_of(body: str) -> float:
    """The mean radius of a bright star, a planet, the Sun or the Moon, in kilometres.

    Args:
        body: The name of the star, planet or Moon, for example "Sirius" or "Jupiter".
    """
    return _rounded(_body(body)[2])


def angular_size(diameter_km: float, distance_km: float) -> float:
    """The angular size in arcseconds of an object of a given diameter seen from a distance.

    Args:
        diameter_km: The object's diameter in kilometres.
        distance_km: The distance to the object in kilometres.
    """
    if diameter_km <= 0 or distance_km <= 0:
        raise ValueError("diameter and distance must be positive")
    radians = 2 * math.atan(diameter_km / (2 * distance_km))
    return _rounded(math.degrees(radians) * 3600)


TOOLS = [convert_distance, distance_to, radius_of, angular_size]
