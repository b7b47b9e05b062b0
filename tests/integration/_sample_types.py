"""The sample NER's type sets mapped to one shared space (MoNERo's Romanian types), as a user's `labels:` writes
it; the same map as study-demo.yaml's NER tasks."""

SHARED_TYPES = ["ANAT", "CHEM", "DISO", "PROC"]
SPANISH_TO_SHARED = {"NORMALIZABLES": "CHEM", "NO_NORMALIZABLES": "CHEM", "ENFERMEDAD": "DISO", "SINTOMA": "DISO",
                     "PROCEDIMIENTO": "PROC", "ANATOMIA": "ANAT"}
DUTCH_TO_SHARED = {"Medicatie": "CHEM", "Aandoening": "DISO", "Symptoom": "DISO", "Verrichting": "PROC",
                   "Anatomie": "ANAT"}
