"""MkDocs hook: pages other branches are writing (listed in the nav) stand in as a short
notice until they are merged, so that the strict build passes before and after the merge
without a placeholder file in git to conflict with theirs."""

from __future__ import annotations

from mkdocs.structure.files import File

PENDING = {
    "pytorch.md": "PyTorch users",
    "security.md": "Model files and safety",
    "hyperspectral.md": "Spectra, scenes and sensors",
    "segmentation.md": "Segmentation models",
    "benchmark/vs-tensorflow.md": "Against TensorFlow",
}


def on_files(files, config):
    for path, title in PENDING.items():
        if files.get_file_from_path(path) is None:
            files.append(File.generated(config, path, content=f"# {title}\n\nThis page is being written.\n"))
    return files
