#' Read a report folder written by xband
#'
#' Reads what `xband explain` (from R, the shell or Python) wrote into `out`:
#' `importance.csv`, `top_bands.csv`, `consensus.csv` and `summary.json`, as an
#' `xband_result`. [xband_explain()] returns the same.
#'
#' An `xband_result` is a list; its data frames have typed columns (numbers are numeric,
#' counts integer), and `class` columns are factors whose levels are the classes in the
#' model's output order, followed by `"all images"` (the rows over every image):
#' \describe{
#'   \item{`verdict`}{One row per class: `class`, `sentence` (the verdict in words),
#'     `agreed` (the trusted methods agree on its first band), `first` (that band),
#'     `top_bands` (its top 3 by consensus, comma-separated).}
#'   \item{`verdict_status`}{One sentence: which methods the verdict rests on and whether
#'     they were checked (`evaluate = TRUE`).}
#'   \item{`trusted_methods`, `excluded_methods`}{Methods the verdict uses; methods left out
#'     by the checks (a named character vector of reasons).}
#'   \item{`importance`}{Band x class x method rows: `method`, `grouping` (`"true_class"`,
#'     `"predicted_class"`, `"correct"`), `class`, `target`, `band` (a factor in band order),
#'     `band_index` (0-based), `wavelength_nm`, `score` (mean), `score_std`, `ci_low`,
#'     `ci_high`, `share` (of the class's total), `share_std`, `share_ci_low`,
#'     `share_ci_high`, `n` (images), `rank` (1 = most important).}
#'   \item{`top_bands`}{One row per class: `class`, `consensus` (top bands by mean rank over
#'     the methods, `=` for ties), then each method's top band.}
#'   \item{`consensus`}{`class`, `band`, `mean_rank`, `consensus_rank`.}
#'   \item{`accuracy`}{One row per class and `"all images"`: `class`, `n_images`,
#'     `accuracy` (multi-label runs: precision, recall, F1 and support columns).}
#'   \item{`fidelity`}{One row: how the model converted to PyTorch matches the original
#'     (`reference`, `max_abs_diff`, `rel_diff`, `grad_rel_diff`, `passed`, ...); no rows
#'     when no conversion was needed.}
#'   \item{`methods`}{One row per method: `method`, `passes_per_image`, `seconds`.}
#'   \item{`checks`}{With `evaluate = TRUE`: the trust checks' tables, a named list of data
#'     frames (`randomisation`, `faithfulness`, `deletion_curves`, `agreement_pairs`,
#'     `consensus_bootstrap`, `baseline_stability`, `completeness`: those that ran); else an
#'     empty list.}
#'   \item{`classes`, `bands`}{Class names in model order; band (or region) names in order.}
#'   \item{`summary_json`}{All of `summary.json`, as a list.}
#'   \item{`out`, `report`}{The report folder and its `report.html`.}
#' }
#'
#' @param out A report folder written by `xband explain`.
#' @return An object of class `xband_result`.
#' @export
#' @examples
#' res <- xband_read(system.file("extdata", "example-report", package = "xband"))
#' res
#' summary(res)
#' res$top_bands
#' head(res$importance)
xband_read <- function(out) {
  string_text("out", out)
  summary_file <- file.path(out, "summary.json")
  if (!file.exists(summary_file)) {
    stop(sprintf(paste0("xband_read: '%s' holds no summary.json: it is not a report folder ",
                        "written by xband explain (or its run did not finish)."), out),
         call. = FALSE)
  }
  info <- jsonlite::fromJSON(summary_file, simplifyVector = FALSE)
  classes <- as.character(unlist(info$classes))
  importance <- read_importance(file.path(out, "importance.csv"), classes)
  verdict <- info$verdict
  structure(class = "xband_result", list(
    verdict = verdict_frame(verdict$classes, classes),
    verdict_status = as.character(verdict$status %||% NA_character_),
    trusted_methods = as.character(unlist(verdict$trusted)),
    excluded_methods = unlist(verdict$excluded) %||% stats::setNames(character(), character()),
    importance = importance,
    top_bands = read_table(file.path(out, "top_bands.csv"), classes, by_class = TRUE),
    consensus = read_table(file.path(out, "consensus.csv"), classes, by_class = TRUE,
                           numeric_columns = "mean_rank", integer_columns = "consensus_rank"),
    accuracy = accuracy_frame(info$accuracy, info$data$class_counts, classes),
    fidelity = scalars_frame(info$fidelity),
    methods = methods_frame(info$methods),
    checks = read_checks(out, classes),
    classes = classes,
    bands = levels(importance$band),
    summary_json = info,
    out = normalizePath(out),
    report = normalizePath(file.path(out, "report.html"), mustWork = FALSE)
  ))
}

`%||%` <- function(a, b) if (is.null(a)) b else a

# Class names as a factor: the model's classes in order, then "all images", then anything else.
class_factor <- function(x, classes) {
  factor(x, levels = unique(c(classes, "all images", unique(x))))
}

read_importance <- function(file, classes) {
  numeric_columns <- c("wavelength_nm", "score", "score_std", "ci_low", "ci_high", "share",
                       "share_std", "share_ci_low", "share_ci_high")
  table <- read_table(file, classes, numeric_columns = numeric_columns,
                      integer_columns = c("band_index", "n", "rank"))
  order <- unique(table$band[order(table$band_index)])
  table$band <- factor(table$band, levels = order)
  table
}

read_table <- function(file, classes, numeric_columns = character(),
                       integer_columns = character(), by_class = FALSE) {
  if (!file.exists(file)) {
    stop(sprintf("xband_read: %s is missing from the report folder.", basename(file)),
         call. = FALSE)
  }
  table <- utils::read.csv(file, colClasses = "character", check.names = FALSE,
                           na.strings = "", encoding = "UTF-8")
  for (column in intersect(numeric_columns, names(table))) {
    table[[column]] <- as.numeric(table[[column]])
  }
  for (column in intersect(integer_columns, names(table))) {
    table[[column]] <- as.integer(table[[column]])
  }
  if ("class" %in% names(table)) table$class <- class_factor(table$class, classes)
  if (by_class) {  # rows in the model's class order ("all images" last), a stable sort
    table <- table[order(table$class), , drop = FALSE]
    rownames(table) <- NULL
  }
  table
}

verdict_frame <- function(rows, classes) {
  if (!length(rows)) {
    return(data.frame(class = class_factor(character(), classes), sentence = character(),
                      agreed = logical(), first = character(), top_bands = character()))
  }
  text <- function(row, key) as.character(row[[key]] %||% NA_character_)
  data.frame(
    class = class_factor(vapply(rows, text, "", "class"), classes),
    sentence = vapply(rows, text, "", "sentence"),
    agreed = vapply(rows, function(r) isTRUE(r$agreed), logical(1)),
    first = vapply(rows, text, "", "first"),
    top_bands = vapply(rows, function(r) paste(unlist(r$top_bands), collapse = ", "), ""),
    stringsAsFactors = FALSE
  )
}

accuracy_frame <- function(accuracy, counts, classes) {
  per_class <- accuracy$per_class %||% list()
  names_seen <- names(per_class)
  rows <- lapply(names_seen, function(name) {
    value <- per_class[[name]]
    if (is.list(value)) scalars_frame(value) else data.frame(accuracy = as.numeric(value))
  })
  table <- if (length(rows)) do.call(rbind, rows) else data.frame(accuracy = numeric())
  table <- cbind(data.frame(class = names_seen, stringsAsFactors = FALSE), table)
  overall <- accuracy$overall
  if (is.list(overall)) {
    table <- rbind_fill(table, cbind(data.frame(class = "all images"), scalars_frame(overall)))
  } else {
    table <- rbind_fill(table, data.frame(class = "all images",
                                          accuracy = as.numeric(overall %||% NA_real_)))
  }
  n <- vapply(table$class, function(name) {
    if (name == "all images") sum(unlist(counts)) else as.numeric(counts[[name]] %||% NA)
  }, numeric(1))
  table <- cbind(table["class"], n_images = as.integer(n), table[setdiff(names(table), "class")])
  table$class <- class_factor(table$class, classes)
  table <- table[order(table$class), , drop = FALSE]
  rownames(table) <- NULL
  table
}

# A named list of scalars (JSON null -> NA) as a one-row data frame; no rows for NULL.
scalars_frame <- function(values) {
  if (is.null(values)) return(data.frame())
  scalar <- vapply(values, function(v) is.null(v) || (is.atomic(v) && length(v) == 1),
                   logical(1))
  row <- lapply(values[scalar], function(v) if (is.null(v)) NA else v)
  as.data.frame(row, stringsAsFactors = FALSE, check.names = FALSE)
}

rbind_fill <- function(a, b) {
  for (column in setdiff(names(a), names(b))) b[[column]] <- NA
  for (column in setdiff(names(b), names(a))) a[[column]] <- rep(NA, nrow(a))
  rbind(a, b[names(a)])
}

# The trust checks' tables (written with --evaluate), those present, as typed data frames.
read_checks <- function(out, classes) {
  names <- c("randomisation", "faithfulness", "deletion_curves", "agreement_pairs",
             "consensus_bootstrap", "baseline_stability", "completeness")
  files <- file.path(out, paste0(names, ".csv"))
  present <- file.exists(files)
  tables <- lapply(files[present], function(file) {
    table <- utils::read.csv(file, stringsAsFactors = FALSE, check.names = FALSE,
                             encoding = "UTF-8")
    if ("class" %in% names(table)) table$class <- class_factor(table$class, classes)
    python_logicals(table)
  })
  stats::setNames(tables, names[present])
}

# Columns pandas wrote as True/False become logical.
python_logicals <- function(table) {
  for (column in names(table)) {
    values <- table[[column]]
    if (is.character(values) && all(values[!is.na(values)] %in% c("True", "False"))) {
      table[[column]] <- values == "True"
    }
  }
  table
}

methods_frame <- function(methods) {
  if (!length(methods)) {
    return(data.frame(method = character(), passes_per_image = numeric(), seconds = numeric()))
  }
  data.frame(
    method = names(methods),
    passes_per_image = vapply(methods, function(m) as.numeric(m$passes_per_image %||% NA), 0),
    seconds = vapply(methods, function(m) as.numeric(m$seconds %||% NA), 0),
    row.names = NULL, stringsAsFactors = FALSE
  )
}

#' @export
as.data.frame.xband_result <- function(x, ...) x$importance
