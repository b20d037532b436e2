"""Accuracy of normalization on real-world series descriptions (see the set's README)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from ontology.normalize import SeriesText, normalize

LABELLED = Path(__file__).resolve().parents[2] / "data" / "series_descriptions" / "labelled.csv"
FLOOR = 0.90


def record(row: dict[str, str]) -> SeriesText:
    return SeriesText.from_mapping(
        {
            "Modality": row["modality"],
            "SeriesDescription": row["description"],
            "ProtocolName": row["protocol_name"],
            "ScanningSequence": row["scanning_sequence"],
            "SequenceVariant": row["sequence_variant"],
            "RepetitionTime": row["repetition_time"],
            "EchoTime": row["echo_time"],
            "InversionTime": row["inversion_time"],
            "ContrastBolusAgent": row["contrast_agent"],
            "ImageType": row["image_type"],
            "BodyPartExamined": row["body_part"],
        }
    )


def test_normalization_accuracy_on_the_labelled_set_is_above_the_floor() -> None:
    with LABELLED.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    misses = []
    for row in rows:
        result = normalize(record(row))
        kind_ok = result.sequence_type.value == row["expected_sequence_type"]
        contrast_ok = result.contrast == (row["expected_contrast"] == "yes")
        for key, ok in (
            ("type", kind_ok),
            ("contrast", contrast_ok),
            ("both", kind_ok and contrast_ok),
        ):
            right[key] += ok
            total[key] += 1
            right[f"{key}/{row['split']}"] += ok
            total[f"{key}/{row['split']}"] += 1
        if not (kind_ok and contrast_ok):
            misses.append(
                f"  {row['description']!r} ({row['protocol_name']!r}): expected "
                f"{row['expected_sequence_type']}/{row['expected_contrast']}, got "
                f"{result.sequence_type.value}/{'yes' if result.contrast else 'no'}"
            )
    accuracy = right["both"] / total["both"]
    print(f"\nnormalization accuracy on {total['both']} labelled series descriptions:")
    for key in sorted(total):
        print(f"  {key:18} {right[key]:4}/{total[key]:<4} {right[key] / total[key]:.1%}")
    print("misses:", *misses, sep="\n")

    assert len(rows) >= 300
    assert accuracy >= FLOOR, f"accuracy {accuracy:.1%} is below the floor {FLOOR:.0%}"
