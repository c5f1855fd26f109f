# The xband command for the tests that run it: $XBAND_TEST_VENV/bin/xband (tests/test_r.py
# sets it), else wherever xband_path() finds it. Without either these tests are skipped
# (tests/test_r.py fails on a skip).
test_xband <- function() {
  venv <- Sys.getenv("XBAND_TEST_VENV")
  if (nzchar(venv)) return(normalizePath(file.path(venv, "bin", "xband")))
  if (!xband_available()) {
    skip("xband (the Python command) was not found: set XBAND_TEST_VENV to its virtualenv")
  }
  xband_path()
}

# The PATH without the folders that hold an xband command.
path_without_xband <- function() {
  folders <- strsplit(Sys.getenv("PATH"), .Platform$path.sep, fixed = TRUE)[[1]]
  keep <- !file.exists(file.path(folders, "xband"))
  paste(folders[keep], collapse = .Platform$path.sep)
}

# The first band of each planted class by one method's scores, from the top-bands table.
top_band_of_planted <- function(res, method) {
  rows <- res$top_bands[match(names(PLANTED), res$top_bands$class), ]
  stats::setNames(rows[[method]], names(PLANTED))
}
