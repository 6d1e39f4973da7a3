"""Tools for the agent tests: what a user's --tools file looks like."""


def distance_ly(star: str) -> float:
    """Distance from the Sun to a bright star, in light-years.

    Args:
        star: The star's common name, for example "Vega".
    """
    distances = {"vega": 25.0, "sirius": 8.6, "betelgeuse": 548.0}
    return distances[star.strip().lower()]


def broken(x):  # no type hint: refused with one sentence when chosen
    return x


def _helper() -> None:  # private: never offered to the model
    pass
