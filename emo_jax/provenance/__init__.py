"""How what emo-jax makes declares itself machine-generated, in three independent ways (README, Marked as
generated): metadata in the file (`metadata`), a signed C2PA manifest (`credentials`) and an invisible watermark
in the frames (`watermark`). `check` reads all three back (`emo-jax provenance FILE`).
"""
