def pytest_terminal_summary(terminalreporter):
    """The run ends by saying how many schedules it checked."""
    from tests.simulation.test_simulation import RAN

    if RAN:
        terminalreporter.write_line(f"{sum(RAN)} schedules")
