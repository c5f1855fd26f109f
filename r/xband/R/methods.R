#' Print, summarise and plot an xband result
#'
#' `print()` shows the verdict per class and where the report is; `summary()` the verdict
#' first, then the top bands per class and method, accuracy, conversion fidelity and the
#' methods' cost; `plot()` a band x class heat map of one method's importance.
#'
#' @param x,object An `xband_result` ([xband_explain()], [xband_read()]).
#' @param ... Not used.
#' @return `print()` returns `x` invisibly; `summary()` an object of class
#'   `summary.xband_result` (a list: `verdict_status`, `verdict`, `top_bands`, `accuracy`,
#'   `fidelity`, `methods`); `plot()` the shares as a band x class matrix, invisibly, or the
#'   ggplot object when ggplot2 drew it.
#' @name xband_result
#' @examples
#' res <- xband_read(system.file("extdata", "example-report", package = "xband"))
#' print(res)
#' summary(res)
#' plot(res, method = "feature_ablation")
#' plot(res, engine = "base")
NULL

#' @rdname xband_result
#' @export
print.xband_result <- function(x, ...) {
  info <- x$summary_json
  cat(sprintf("xband result: %d images, %d classes, %d %ss; methods: %s\n",
              as.integer(info$data$n_images %||% NA), length(x$classes), length(x$bands),
              info$verdict$feature %||% "band", paste(x$methods$method, collapse = ", ")))
  cat(sprintf("model: %s\n", info$model$path %||% "?"))
  cat(x$verdict_status, "\n", sep = "")
  if (!isTRUE(info$verdict$checked)) {
    cat("(in R: xband_explain(..., evaluate = TRUE) runs the checks)\n")
  }
  if (nrow(x$verdict)) cat(paste0("  ", x$verdict$sentence, "\n"), sep = "")
  cat(sprintf("report: %s\n", x$report))
  invisible(x)
}

#' @rdname xband_result
#' @export
summary.xband_result <- function(object, ...) {
  structure(class = "summary.xband_result", list(
    verdict_status = object$verdict_status,
    verdict = object$verdict,
    top_bands = object$top_bands,
    accuracy = object$accuracy,
    fidelity = object$fidelity,
    methods = object$methods,
    report = object$report
  ))
}

#' @rdname xband_result
#' @export
print.summary.xband_result <- function(x, ...) {
  cat("Verdict: ", x$verdict_status, "\n", sep = "")
  if (nrow(x$verdict)) {
    print(x$verdict[c("class", "first", "agreed", "top_bands")], row.names = FALSE)
  }
  cat("\nTop bands per class (consensus over the methods, then each method's first):\n")
  print(x$top_bands, row.names = FALSE)
  cat("\nAccuracy on the images explained:\n")
  print(x$accuracy, row.names = FALSE, digits = 3)
  if (nrow(x$fidelity)) {
    f <- x$fidelity
    cat(sprintf("\nConversion fidelity vs %s: %s (max |diff| %.3g, relative %.3g%s)\n",
                f$reference %||% "the original", if (isTRUE(f$passed)) "passed" else "FAILED",
                f$max_abs_diff %||% NA_real_, f$rel_diff %||% NA_real_,
                if (is.null(f$grad_rel_diff)) "" else
                  sprintf("; gradient relative %.3g", f$grad_rel_diff)))
  }
  cat("\nMethods (forward or backward passes per image, seconds):\n")
  print(x$methods, row.names = FALSE)
  cat("\nreport: ", x$report, "\n", sep = "")
  invisible(x)
}

#' @rdname xband_result
#' @param method The method to plot (default: the first the verdict trusts).
#' @param value `"share"` (of the class's total importance; default) or `"score"`.
#' @param grouping Images grouped by `"true_class"` (default when labelled),
#'   `"predicted_class"` or `"correct"` (correctly classified only).
#' @param engine `"auto"` (ggplot2 when installed, else base graphics), `"ggplot2"` or
#'   `"base"`.
#' @export
plot.xband_result <- function(x, method = NULL, value = c("share", "score"), grouping = NULL,
                              engine = c("auto", "ggplot2", "base"), ...) {
  value <- match.arg(value)
  engine <- match.arg(engine)
  shares <- heatmap_matrix(x, method, value, grouping)
  if (engine == "auto") {
    engine <- if (requireNamespace("ggplot2", quietly = TRUE)) "ggplot2" else "base"
  }
  if (engine == "ggplot2") {
    drawn <- heatmap_ggplot(shares, attr(shares, "title"))
    print(drawn)
    return(invisible(drawn))
  }
  heatmap_base(shares, attr(shares, "title"))
  invisible(shares)
}

# Band x class matrix of one method's `value` (classes in model order, "all images" left out).
heatmap_matrix <- function(x, method, value, grouping) {
  rows <- x$importance
  method <- method %||% c(x$trusted_methods, unique(rows$method))[1]
  if (!method %in% rows$method) {
    stop(sprintf("plot: no method '%s' in this result; it has %s.", method,
                 toString(unique(rows$method))), call. = FALSE)
  }
  grouping <- grouping %||%
    (if ("true_class" %in% rows$grouping) "true_class" else "predicted_class")
  keep <- rows$method == method & rows$grouping == grouping & rows$class != "all images" &
    (grepl(" class$", rows$target) | rows$target == as.character(rows$class))
  rows <- droplevels(rows[keep, , drop = FALSE])
  if (!nrow(rows)) {
    stop(sprintf("plot: no rows for method '%s' grouped by '%s'.", method, grouping),
         call. = FALSE)
  }
  shares <- matrix(NA_real_, nlevels(rows$band), nlevels(rows$class),
                   dimnames = list(band = levels(rows$band), class = levels(rows$class)))
  shares[cbind(as.integer(rows$band), as.integer(rows$class))] <- rows[[value]]
  attr(shares, "title") <- sprintf("%s: mean %s per class", method, value)
  shares
}

heatmap_ggplot <- function(shares, title) {
  cells <- data.frame(
    band = factor(rownames(shares)[row(shares)], levels = rownames(shares)),
    class = factor(colnames(shares)[col(shares)], levels = rev(colnames(shares))),
    value = as.vector(shares)
  )
  limit <- max(abs(cells$value), na.rm = TRUE)
  ggplot2::ggplot(cells, ggplot2::aes(.data$band, .data$class, fill = .data$value)) +
    ggplot2::geom_tile() +
    ggplot2::geom_text(ggplot2::aes(label = sprintf("%.2f", .data$value)), size = 3) +
    ggplot2::scale_fill_gradient2(limits = c(-limit, limit), low = "#2166AC", mid = "white",
                                  high = "#B2182B", name = NULL) +
    ggplot2::labs(title = title, x = NULL, y = NULL) +
    ggplot2::theme_minimal() +
    ggplot2::theme(axis.text.x = ggplot2::element_text(angle = 90, vjust = 0.5, hjust = 1))
}

heatmap_base <- function(shares, title) {
  bands <- rownames(shares)
  classes <- colnames(shares)
  limit <- max(abs(shares), na.rm = TRUE)
  old <- graphics::par(mar = c(6, max(4, 0.6 * max(nchar(classes))), 3, 1))
  on.exit(graphics::par(old))
  rows <- rev(seq_along(classes))  # the model's first class on top
  graphics::image(seq_along(bands), seq_along(classes), shares[, rev(classes), drop = FALSE],
                  axes = FALSE, xlab = "", ylab = "", zlim = c(-limit, limit),
                  col = grDevices::hcl.colors(51, "Blue-Red 3"), main = title)
  graphics::axis(1, at = seq_along(bands), labels = bands, las = 2)
  graphics::axis(2, at = rows, labels = classes, las = 1)
  graphics::text(rep(seq_along(bands), length(classes)), rep(rows, each = length(bands)),
                 sprintf("%.2f", shares), cex = 0.7,
                 col = ifelse(abs(shares) > 0.6 * limit, "white", "black"))
}
