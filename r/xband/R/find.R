#' Where the xband command is
#'
#' The R package runs `xband`, the Python command line, and looks for it in this order:
#' 1. `options(xband.path = "/path/to/.venv/bin/xband")`,
#' 2. the environment variable `XBAND` (`Sys.setenv(XBAND = ...)` or `~/.Renviron`),
#' 3. the `PATH`, as the shell does (`Sys.which("xband")`).
#'
#' The first one set is used; when it names no executable file, or when none is set and
#' `xband` is not on the `PATH`, `xband_path()` stops with a message that says what to set.
#'
#' @return `xband_path()`: the path of the executable. `xband_available()`: `TRUE` when it is
#'   found, `FALSE` otherwise (no error).
#' @export
#' @examples
#' if (xband_available()) xband_path()
xband_path <- function() {
  option <- getOption("xband.path")
  if (!is.null(option)) {
    return(checked_executable(option, "options(xband.path = ...)",
                              "options(xband.path = NULL)"))
  }
  variable <- Sys.getenv("XBAND")
  if (nzchar(variable)) {
    return(checked_executable(variable, "the XBAND environment variable",
                              "Sys.unsetenv(\"XBAND\")"))
  }
  found <- Sys.which("xband")
  if (nzchar(found)) return(unname(found))
  stop(not_found_message(), call. = FALSE)
}

#' @rdname xband_path
#' @export
xband_available <- function() {
  !inherits(tryCatch(xband_path(), error = identity), "error")
}

checked_executable <- function(path, where, unset) {
  if (!is.character(path) || length(path) != 1 || is.na(path)) {
    stop(where, " must be one path (a character string), the xband executable", call. = FALSE)
  }
  full <- path.expand(path)
  if (!file.exists(full) || dir.exists(full) || file.access(full, 1) != 0) {
    stop(sprintf(paste0("%s is '%s', which is not an executable file. Set it to the xband ",
                        "command that pip installed, e.g. '/path/to/.venv/bin/xband' ",
                        "(`which xband` in a shell where the virtualenv is active), or unset ",
                        "it (%s) to look on the PATH."), where, path, unset), call. = FALSE)
  }
  normalizePath(full)
}

not_found_message <- function() {
  sep <- .Platform$path.sep
  paste0(
    "xband (the Python command) was not found: options(xband.path) and the XBAND ",
    "environment variable are not set, and it is not on the PATH (", Sys.getenv("PATH"), ").\n",
    "Install it (in the xband repository: python3 -m venv .venv && .venv/bin/pip install ",
    "-c constraints.txt -e \".[keras]\"), then tell R where it is, by one of:\n",
    "  Sys.setenv(PATH = paste(\"/path/to/.venv/bin\", Sys.getenv(\"PATH\"), sep = \"", sep,
    "\"))  # the virtualenv's bin folder\n",
    "  Sys.setenv(XBAND = \"/path/to/.venv/bin/xband\")\n",
    "  options(xband.path = \"/path/to/.venv/bin/xband\")\n",
    "(put XBAND=... in ~/.Renviron, or the option in ~/.Rprofile, to keep it for every session)."
  )
}
