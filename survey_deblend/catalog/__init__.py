"""The catalog stage: read DES SVA1 shear and gold catalogs, select, match, count the cuts."""
