"""Standard terminology for the segments MediastinalAI creates.

Slicer stores a segment's meaning as a *terminology entry* string (segment tag
``TerminologyEntry``), seven ``~``-separated fields::

    <terminology context>~<category>~<type>~<type modifier>~<anatomic context>~<region>~<region modifier>

where each coded field is ``CodingSchemeDesignator^CodeValue^CodeMeaning`` (empty: ``^^``).
This is the format Slicer's Terminologies module reads and writes and that DICOM SEG export
turns into SegmentedPropertyCategory/Type and AnatomicRegion(Modifier) sequences.

Codes (SNOMED CT, scheme designator ``SCT``), checked against the DICOM content mapping
resource (PS3.16) as shipped in pydicom's concept dictionary:

==========================  ===========  ==============================================
field                       code         meaning (DICOM context group)
==========================  ===========  ==============================================
category                    49755003     Morphologically Altered Structure (CID 7150) [1]_
type                        4147007      Mass (CID 7151, Segmentation Property Types)
anatomic region             72410000     Mediastinum (CID 4, Anatomic Region)
anatomic region modifier    255549009    Anterior (CID 2, Anatomic Modifier)
==========================  ===========  ==============================================

.. [1] DICOM's code meaning is "Morphologically Abnormal Structure"; Slicer's own
   terminology lists spell the same code "Morphologically Altered Structure", which is what we
   write so the entry matches Slicer's list item exactly.

PS3.16 has no single pre-coordinated concept for "anterior mediastinum" in its anatomic
region groups, so the region is coded the DICOM way: region *Mediastinum* plus the modifier
*Anterior*. Slicer shows it as "Mass" in "Mediastinum, Anterior".
"""

from __future__ import annotations

from dataclasses import dataclass

CATEGORY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class Code:
    scheme: str
    value: str
    meaning: str

    def __str__(self) -> str:  # "SCT^4147007^Mass"
        return f"{self.scheme}^{self.value}^{self.meaning}"

    @classmethod
    def parse(cls, text: str) -> Code | None:
        parts = (text or "").split("^")
        if len(parts) != 3 or not any(parts):
            return None
        return cls(*parts)


EMPTY = "^^"
MORPHOLOGICALLY_ALTERED_STRUCTURE = Code("SCT", "49755003", "Morphologically Altered Structure")
MASS = Code("SCT", "4147007", "Mass")
MEDIASTINUM = Code("SCT", "72410000", "Mediastinum")
ANTERIOR = Code("SCT", "255549009", "Anterior")

#: Default segment name and colour (RGB 0..1) of the tumour segment.
TUMOR_SEGMENT_NAME = "Anterior mediastinal tumor"
TUMOR_COLOR = (0.90, 0.35, 0.25)


@dataclass(frozen=True)
class TerminologyEntry:
    category: Code
    type: Code
    type_modifier: Code | None = None
    region: Code | None = None
    region_modifier: Code | None = None
    category_context: str = CATEGORY_CONTEXT
    anatomic_context: str = ANATOMIC_CONTEXT

    def to_string(self) -> str:
        def c(code: Code | None) -> str:
            return str(code) if code is not None else EMPTY

        return "~".join(
            [
                self.category_context,
                c(self.category),
                c(self.type),
                c(self.type_modifier),
                self.anatomic_context,
                c(self.region),
                c(self.region_modifier),
            ]
        )

    @classmethod
    def parse(cls, text: str) -> TerminologyEntry:
        fields = (text or "").split("~")
        if len(fields) != 7:
            raise ValueError(f"not a Slicer terminology entry (need 7 '~'-separated fields): {text!r}")
        category, type_ = Code.parse(fields[1]), Code.parse(fields[2])
        if category is None or type_ is None:
            raise ValueError(f"terminology entry without category/type: {text!r}")
        return cls(
            category=category,
            type=type_,
            type_modifier=Code.parse(fields[3]),
            region=Code.parse(fields[5]),
            region_modifier=Code.parse(fields[6]),
            category_context=fields[0],
            anatomic_context=fields[4],
        )


#: Mass in the anterior mediastinum: what every MediastinalAI tumour segment carries.
ANTERIOR_MEDIASTINAL_MASS = TerminologyEntry(
    category=MORPHOLOGICALLY_ALTERED_STRUCTURE, type=MASS, region=MEDIASTINUM, region_modifier=ANTERIOR
)
TUMOR_TERMINOLOGY = ANTERIOR_MEDIASTINAL_MASS.to_string()
