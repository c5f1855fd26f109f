# Finding the xband command: options(xband.path), then XBAND, then the PATH.

fake_xband <- function(folder) {
  dir.create(folder, recursive = TRUE, showWarnings = FALSE)
  path <- file.path(folder, "xband")
  writeLines(c("#!/bin/sh", "echo fake"), path)
  Sys.chmod(path, "0755")
  normalizePath(path)
}

test_that("the option wins over XBAND, which wins over the PATH", {
  on_path <- fake_xband(file.path(tempfile(), "on path"))
  by_variable <- fake_xband(file.path(tempfile(), "by variable"))
  by_option <- fake_xband(file.path(tempfile(), "by option"))
  withr::local_envvar(PATH = paste(dirname(on_path), "/usr/bin:/bin", sep = ":"))
  withr::local_envvar(XBAND = NA)
  withr::local_options(xband.path = NULL)
  expect_equal(xband_path(), on_path)
  withr::local_envvar(XBAND = by_variable)
  expect_equal(xband_path(), by_variable)
  withr::local_options(xband.path = by_option)
  expect_equal(xband_path(), by_option)
  expect_true(xband_available())
})

test_that("when xband is not found, the error says what to set", {
  withr::local_envvar(PATH = "/usr/bin:/bin", XBAND = NA)
  withr::local_options(xband.path = NULL)
  skip_if(nzchar(Sys.which("xband")), "xband is installed in /usr/bin or /bin")
  expect_false(xband_available())
  err <- expect_error(xband_path())
  message <- conditionMessage(err)
  expect_match(message, "xband (the Python command) was not found", fixed = TRUE)
  expect_match(message, "pip install", fixed = TRUE)
  expect_match(message, "Sys.setenv(PATH = paste(\"/path/to/.venv/bin\"", fixed = TRUE)
  expect_match(message, "Sys.setenv(XBAND = \"/path/to/.venv/bin/xband\")", fixed = TRUE)
  expect_match(message, "options(xband.path = \"/path/to/.venv/bin/xband\")", fixed = TRUE)
})

test_that("an option or XBAND naming no executable is an error naming it", {
  withr::local_options(xband.path = "/no/such/xband")
  expect_error(xband_path(), "options(xband.path = ...) is '/no/such/xband'", fixed = TRUE)
  withr::local_options(xband.path = NULL)
  withr::local_envvar(XBAND = tempdir())
  expect_error(xband_path(), "the XBAND environment variable is", fixed = TRUE)
  expect_error(xband_explain("model.keras", "patches"), "not an executable file")
})
