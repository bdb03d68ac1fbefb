"""Documents shared by every feature: PDF rendering, vector QR codes, the signed-payload codec
and ISBT 128 identifiers. Sits below all features; imports no feature."""
