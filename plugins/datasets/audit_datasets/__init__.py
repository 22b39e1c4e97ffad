"""audit-datasets: read standard data sets from local files (never downloading) and split them
into members and non-members with the published split files."""
