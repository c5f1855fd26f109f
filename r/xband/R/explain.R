#' Which bands does a classifier rely on, per class?
#'
#' Runs `xband explain` (the Python command line) on a model and images, passing its progress
#' to the R console, and returns the report it writes as an `xband_result`: data frames of band
#' importance per class and method, the top bands per class (classes in the model's order),
#' accuracy, conversion fidelity and the verdict, with [print()][print.xband_result],
#' [summary()][summary.xband_result] and [plot()][plot.xband_result] methods.
#'
#' @section Images (`data`):
#' * **A folder of GeoTIFF patches**, one sub-folder per class (the EuroSAT layout; what
#'   `terra::writeRaster()` writes is read, LZW included): `data = "patches"`. The classes are
#'   the folder names; give `classes` in the model's output order (the default is the folder
#'   names sorted, which is seldom the model's order).
#' * **GeoTIFF files and their labels**: `data = c("a.tif", "b.tif", ...)` with `labels` a
#'   factor (one per file). xband reads the files itself, with their band descriptions,
#'   nodata, scale and wavelength metadata.
#' * **A list of terra `SpatRaster`s**, one multi-layer raster per image (layers = bands, all
#'   the same size), e.g. `lapply(files, terra::rast)` or patches cut with `terra::crop()`,
#'   with `labels`. The values are those `terra::values()` gives (scale and offset applied,
#'   nodata as `NA`: an image with `NA` is an error unless `skip_bad = TRUE`). The layer names
#'   are the band names when every raster has the same ones.
#' * **An R array** `(images, height, width, bands)`, as R's keras takes them, with `labels`;
#'   `dimnames(x)[[4]]`, when set, names the bands. For `(images, bands, height, width)` set
#'   `data_layout = "channels_first"`. Written for xband as a `.npy` file in R's column-major
#'   order: nothing is transposed or copied in R.
#' * **Any file `xband explain --data` reads**: a `.csv` of `path,label` rows, an `.h5` file
#'   (`x_key`, `y_key`), a `.npz`, or `.npy` images with `labels` the path of a labels file.
#'
#' @section Labels and classes:
#' `labels` is a factor whose **levels are the classes in the model's output order** (the
#' level order is what counts: `factor(y, levels = c("Water", "Crop", ...))`, not `factor(y)`,
#' which sorts them), or class names with `classes` giving that order. With no labels, xband
#' explains the predicted class. Class names may hold spaces, not commas.
#'
#' @section Where xband is found:
#' See [xband_path()]: `options(xband.path = ...)`, then `Sys.getenv("XBAND")`, then the
#' `PATH`.
#'
#' @param model Path of the model: `.keras`, `.h5`, a SavedModel folder, `.onnx`, TorchScript
#'   or `.pt2` (as `xband explain --model`).
#' @param data The images: see the section "Images".
#' @param labels A factor of class labels, one per image (see "Labels and classes"); for a
#'   `.npy`/`.h5` file path, the path of a labels file. `NULL` for a class folder (its folders
#'   are the labels) or to explain the predicted class.
#' @param classes Class names in the model's output order (a character vector, or a factor
#'   whose levels are used). Default: the levels of `labels`, else what the files say (the
#'   class folder names, sorted).
#' @param bands Band names in file order (a character vector). Default: the array's
#'   `dimnames`, the rasters' layer names, the GeoTIFF band descriptions, the `sensor`'s.
#' @param sensor A sensor preset giving band names, wavelengths and spectral groups, e.g.
#'   `"sentinel2"`, `"landsat8"`; `xband sensors` in a shell lists them.
#' @param methods Attribution methods (a character vector), or `"all"` (xband's default):
#'   `"saliency"`, `"scaled_saliency"`, `"input_x_gradient"`, `"integrated_gradients"`,
#'   `"gradient_shap"`, `"feature_ablation"`, `"shapley"`, `"permutation"`, `"lime"`,
#'   `"kernel_shap"`.
#' @param out Folder for the report (`report.html`, the CSV tables, `summary.json`): new,
#'   empty or one xband wrote. The default, a temporary folder, is deleted when R ends.
#' @param overwrite `TRUE` to replace `out` even if it holds files xband did not write (they
#'   are deleted).
#' @param figures `FALSE` to write the tables, `summary.json` and a report without figures
#'   (quicker, for scripted runs).
#' @param seed Seed for every random draw (a whole number; xband's default is 0).
#' @param max_per_class,max_images Use at most this many images per class / in all (sampled
#'   per class with `seed`).
#' @param all_images `TRUE` to explain every image. By default each class's images are
#'   explained in rounds until its top 3 bands are settled (at least 30 images).
#' @param budget Time for the methods together: seconds (a number) or a string like `"5m"`,
#'   `"1.5h"`; each method takes the form its share affords.
#' @param target Whose output is explained: `"true"` (the label; default with labels),
#'   `"predicted"` (default without) or `"all"` (every class: a class x class view).
#' @param baseline What a removed band becomes: `"data"` (that band of other images of the
#'   data; default), `"mean"` or `"zero"`.
#' @param background_images Background images of the data baseline per image (a whole number).
#' @param output_space `"logits"` (default; a final softmax is stripped) or `"probabilities"`.
#' @param multi_label `TRUE` to explain each image for each of its labels (default when the
#'   network ends in a sigmoid).
#' @param scale,clip,norm_stats Preprocessing the model saw in training, in this order:
#'   multiply by `scale` (e.g. `1e-4` for reflectance stored x 10000), clip to
#'   `clip = c(low, high)`, standardise each band with the statistics in the JSON file
#'   `norm_stats` (computed and saved there when it does not exist).
#' @param nodata Value marking missing pixels (an image holding it is an error, or left out
#'   with `skip_bad = TRUE`).
#' @param skip_bad `TRUE` to leave out unreadable files and images with `NA`, infinite or
#'   nodata values (listed in the report) instead of stopping.
#' @param band_groups Band groups scored as wholes: a named list of band names, e.g.
#'   `list(VIS = c("B02", "B03", "B04"), NIR = c("B08", "B8A"))`.
#' @param wavelengths Centre wavelength of each band in nm (a numeric vector), or the path of
#'   a text file or ENVI `.hdr` holding them.
#' @param regions Explain by spectral region: `"auto"` (100 nm windows), a width like
#'   `"50nm"`, `"none"`, or named wavelength ranges in nm, e.g.
#'   `list(VIS = c(400, 700), NIR = c(750, 1300))`.
#' @param method_options Method options, e.g. `list(integrated_gradients = list(n_steps = 64))`
#'   or `list(integrated_gradients.n_steps = 64)` (`xband explain --help` lists them).
#' @param examples_per_class Images per class kept whole for per-band maps (default 2).
#' @param accept_low_accuracy `TRUE` to go on when the predictions match the labels far better
#'   under another class order than under the one given.
#' @param evaluate `TRUE` to also run the trust checks (model randomisation, band deletion,
#'   agreement, completeness); the verdict then keeps only the methods that pass.
#' @param checks,eval_images,deletion_baselines,random_orders,cascade_stages Settings of the
#'   checks: which to run (`c("randomisation", "faithfulness", "agreement", "completeness")`),
#'   images they use (default 128), what a deleted band becomes (`c("mean", "zero",
#'   "data", "noise")`; "data": that band of another image), random band orders compared
#'   (default 10), randomisation stages (default 4).
#' @param batch_size Images per batch (default 64).
#' @param device `"cpu"` (default) or `"cuda"`.
#' @param untuned `TRUE` to run the network exactly as given, without xband's speed-ups.
#' @param model_layout,data_layout Band axis of the model input / of the images:
#'   `"channels_last"` or `"channels_first"` (default: read from the model and files).
#' @param x_key,y_key HDF5 datasets (or `.npz` arrays) of the images and labels.
#' @param accept_mismatch `TRUE` to go on when the converted model's outputs differ from the
#'   original beyond tolerance.
#' @param trust_pickle,trust_graph `TRUE` to load a full-pickle `.pt` / `.pt2` file, or convert
#'   a SavedModel whose graph reads or writes files (both can run code stored in the file).
#' @param engine,ray_address,workers,gpus_per_worker `engine = "ray"` explains every image on
#'   Ray actors: a cluster address, the number of actors and GPUs per actor.
#' @param quiet `TRUE` to show nothing while xband runs; by default its cost estimate,
#'   progress bars and summary are passed to the console as messages (hide them with
#'   `suppressMessages()`).
#' @param verbose `TRUE` to let the libraries xband runs (onnxruntime, TensorFlow, torch) print
#'   their log lines and warnings too.
#' @return An `xband_result` (see [xband_read()]).
#' @seealso [xband_read()] for the result's parts, [plot.xband_result()], [xband_path()].
#' @export
#' @examples
#' \dontrun{
#' # a folder with one sub-folder of GeoTIFF patches per class (e.g. written by terra)
#' res <- xband_explain("model.keras", "patches",
#'                      classes = c("Water", "Crop", "Forest", "Urban"),
#'                      methods = c("saliency", "feature_ablation"))
#' summary(res)
#' plot(res)
#'
#' # an array (images, height, width, bands) with factor labels, levels in model order
#' res <- xband_explain("model.keras", x, labels = factor(y, levels = 0:3,
#'                      labels = c("Water", "Crop", "Forest", "Urban")),
#'                      bands = c("B02", "B03", "B04", "B08"), scale = 1e-4,
#'                      max_per_class = 50, seed = 1, out = "report")
#'
#' # terra rasters, one per image
#' rasters <- lapply(files, terra::rast)
#' res <- xband_explain("model.keras", rasters, labels = y, evaluate = TRUE)
#' }
xband_explain <- function(model, data, labels = NULL, classes = NULL, bands = NULL,
                          sensor = NULL, methods = "all", out = tempfile("xband-report-"),
                          overwrite = FALSE, figures = TRUE, seed = NULL, max_per_class = NULL,
                          max_images = NULL, all_images = FALSE, budget = NULL, target = NULL,
                          baseline = NULL, background_images = NULL, output_space = NULL,
                          multi_label = FALSE, scale = NULL, clip = NULL, norm_stats = NULL,
                          nodata = NULL, skip_bad = FALSE, band_groups = NULL,
                          wavelengths = NULL, regions = NULL, method_options = NULL,
                          examples_per_class = NULL, accept_low_accuracy = FALSE,
                          evaluate = FALSE, checks = NULL, eval_images = NULL,
                          deletion_baselines = NULL, random_orders = NULL,
                          cascade_stages = NULL, batch_size = NULL, device = NULL,
                          untuned = FALSE, model_layout = NULL, data_layout = NULL,
                          x_key = NULL, y_key = NULL, accept_mismatch = FALSE,
                          trust_pickle = FALSE, trust_graph = FALSE, engine = NULL,
                          ray_address = NULL, workers = NULL, gpus_per_worker = NULL,
                          quiet = FALSE, verbose = FALSE) {
  xband <- xband_path()
  check_model(model)
  out <- path.expand(string_text("out", out))
  work <- tempfile("xband-r-")
  dir.create(work)
  on.exit(unlink(work, recursive = TRUE), add = TRUE)

  found <- data_args(data, labels, classes, bands, work)
  settings <- mget(setdiff(names(option_spec()), c("classes", "bands")))
  settings$classes <- found$classes
  settings$bands <- if (!is.null(bands) || is.null(sensor)) found$bands
  settings$method_options <- method_options
  args <- c("explain", "--model", path.expand(model), found$args,
            wavelength_args(wavelengths, work), "--out", out, cli_options(settings))
  run_xband(args, echo = !quiet, xband = xband)

  result <- xband_read(out)
  result$call <- match.call()
  result
}

check_model <- function(model) {
  string_text("model", model)
  if (!file.exists(model)) {
    stop(sprintf("xband_explain: `model` is '%s', which does not exist (working directory: %s).",
                 model, getwd()), call. = FALSE)
  }
}

wavelength_args <- function(wavelengths, work) {
  if (is.null(wavelengths)) return(character())
  if (is.character(wavelengths)) {
    return(c("--wavelengths", path.expand(string_text("wavelengths", wavelengths))))
  }
  if (!is.numeric(wavelengths) || !length(wavelengths) || !all(is.finite(wavelengths))) {
    arg_error("wavelengths", "must be the bands' centre wavelengths in nm (numbers) or a file",
              wavelengths)
  }
  file <- file.path(work, "wavelengths.txt")
  writeLines(as.character(wavelengths), file)
  c("--wavelengths", file)
}
