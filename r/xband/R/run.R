# Running the xband command: its output is passed to the R console as it comes (the cost
# estimate, progress bars), and a failure becomes an R error carrying xband's own message.

run_xband <- function(args, echo = TRUE, xband = xband_path()) {
  show <- if (echo) function(text, process) message(text, appendLF = FALSE) else NULL
  done <- processx::run(
    xband, args, error_on_status = FALSE, stdout_callback = show, stderr_callback = show,
    env = c("current", PYTHONUNBUFFERED = "1"), cleanup_tree = TRUE
  )
  if (done$status != 0) {
    stop(xband_error(done$status, done$stderr, args))
  }
  invisible(done)
}

# An error condition (class "xband_error") whose message starts with xband's "xband: error: ...".
xband_error <- function(status, stderr, args) {
  lines <- strsplit(gsub("\r", "\n", stderr, fixed = TRUE), "\n", fixed = TRUE)[[1]]
  lines <- lines[nzchar(trimws(lines))]
  first <- grep("^xband( [a-z-]+)?: (error|interrupted)", lines)
  said <- if (length(first)) lines[first[1]:length(lines)] else utils::tail(lines, 15)
  flags <- unique(unlist(regmatches(said[1], gregexpr("--[a-z][a-z-]+", said[1]))))
  known <- flags[flags %in% vapply(option_spec(), `[[`, character(1), "flag")]
  hint <- if (length(known)) {
    paste0("(in R, xband's ", toString(known), " is xband_explain()'s ",
           toString(gsub("-", "_", substring(known, 3))), ")")
  }
  message <- paste(c(if (length(said)) said else
    sprintf("xband exited with status %d and printed no error", status), hint), collapse = "\n")
  structure(class = c("xband_error", "error", "condition"),
            list(message = message, call = NULL, status = status, stderr = stderr, args = args))
}
