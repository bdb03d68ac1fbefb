"""The default release specification (DESIGN.md, "Release rules"). Every limit is a default the
lab replaces with its own validated values in a new specification version."""
from __future__ import annotations

from decimal import Decimal

from labsys.release.rules import POTENCY_TEST_CODE, Criterion, CriterionKind

N = CriterionKind.NUMERIC
T = CriterionKind.TEXT
P = CriterionKind.PASS_FAIL

# The flow cytometry panel entered as one form, in this order.
POSITIVE_MARKERS = ("CD73", "CD90", "CD105")
NEGATIVE_MARKERS = ("CD34", "CD45", "CD11B", "CD19", "HLA_DR")
FLOW_PANEL = POSITIVE_MARKERS + NEGATIVE_MARKERS
MARKER_NAMES = {"CD73": "CD73", "CD90": "CD90", "CD105": "CD105", "CD34": "CD34", "CD45": "CD45",
                "CD11B": "CD11b", "CD19": "CD19", "HLA_DR": "HLA-DR"}
FLOW_METHOD = "Flow cytometry"
STERILITY_TEST_CODE = "STERILITY"

DEFAULT_SPECIFICATION_CODE = "HUC-MSC-RELEASE"
DEFAULT_SPECIFICATION_TITLE = "HUC-MSC drug product release specification"

DEFAULT_CRITERIA: tuple[Criterion, ...] = (
    Criterion("APPEARANCE", "Appearance", P, method="Visual inspection"),
    Criterion("VIABLE_CELLS", "Viable cells per vial", N, "x10^6 cells/vial", Decimal("8"), Decimal("12"),
              method="Automated cell count, AO/PI (target 10 ±20 %)"),
    Criterion("VIABILITY", "Viability at fill", N, "%", Decimal("80"), None, method="AO/PI"),
    *(Criterion(m, f"{MARKER_NAMES[m]} positive", N, "%", Decimal("95"), None, method=FLOW_METHOD)
      for m in POSITIVE_MARKERS),
    *(Criterion(m, f"{MARKER_NAMES[m]} positive", N, "%", None, Decimal("2"), method=FLOW_METHOD)
      for m in NEGATIVE_MARKERS),
    Criterion(STERILITY_TEST_CODE, "Sterility", T, expected_text="no growth", may_be_pending=True,
              method="BacT/ALERT, 14 days (Ph. Eur. 2.6.27)"),
    Criterion("MYCOPLASMA", "Mycoplasma", T, expected_text="negative", method="PCR (Ph. Eur. 2.6.7)"),
    Criterion("ENDOTOXIN", "Endotoxin", N, "EU/mL", None, Decimal("0.5"), method="LAL kinetic chromogenic"),
    Criterion("KARYOTYPE", "Karyotype", T, expected_text="normal", method="G-banding"),
    Criterion(POTENCY_TEST_CODE, "BV2 potency (% inhibition)", N, "%", Decimal("20"), None,
              method="BV2 co-culture morphology assay"),
)
