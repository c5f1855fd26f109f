"""Shared pytest set-up."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "keras: builds or converts Keras models in TensorFlow subprocesses (slower)")
