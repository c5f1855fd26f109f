#' xband: which input bands does a multispectral image classifier rely on, per class?
#'
#' The R front end of xband, a Python command line: [xband_explain()] runs it on a model and
#' images (a folder of GeoTIFF patches, terra rasters, an R array) and returns an
#' `xband_result` ([xband_read()]) with [print][print.xband_result], summary and plot methods.
#' The `xband` command is found by [xband_path()].
#'
#' @keywords internal
"_PACKAGE"

utils::globalVariables(".data")  # ggplot2's data pronoun, in plot.xband_result()
