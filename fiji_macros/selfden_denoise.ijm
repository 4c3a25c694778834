// selfden_denoise.ijm: denoise the active image with selfden (https://github.com/selfden).
//
// Interactive use (Fiji or ImageJ): open an image, run this macro, and choose the model in the
// dialog. The model and the options are remembered for next time; selfden is found by itself
// (see "finding selfden" below) and the one found is remembered, in scripted runs too.
//
// Scripted use: a non-empty argument replaces the dialog. It holds key=value pairs, written
// either as an ImageJ option string, where brackets protect spaces and quotes:
//     runMacro("selfden_denoise.ijm", "model=[/data/my model] samples=20 std device=cpu");
// or as one key=value per line, where everything after the first "=" is the value:
//     runMacro("selfden_denoise.ijm", "model=/data/my model\ninput=/data/cell's image.tif");
// Keys: model (folder, rdf.yaml or .zip; required), input (image file to open; default: the
// active image), output (.tif to save the result to; the std map goes to ..._std.tif),
// samples (COSDD posterior samples, 0 = direct denoiser), std (true/false: uncertainty map),
// tta (true/false: average over the flips/rotations the model was trained with; up to 8x the time),
// device (auto, cpu, cuda), tile_size (pixels, 0 = the model's suggestion),
// selfden (path of the selfden executable; default: found automatically, see findSelfden),
// tmpdir (folder for the temporary working folder; default: ImageJ's temp folder),
// overwrite (true: replace an existing output file and its _std.tif; default false: refuse).
//
// The image is saved to a private temporary folder, `selfden infer` denoises it (each argument
// is passed separately, never through a shell's word splitting), and the result opens with the
// original's title + "_denoised", calibration and stack layout. The temporary folder is removed
// whether selfden succeeds or fails; a failure shows selfden's own one-line error. selfden writes
// into that fresh private folder only, so it is called with --overwrite; the file the user names
// with output= is replaced only with overwrite=true.

var VERSION = "0.1.0";
var PREFS = "selfden.";
var KNOWN_KEYS = newArray("model", "input", "output", "samples", "std", "device", "tile_size", "selfden", "tmpdir", "tta", "overwrite");
var DEVICES = newArray("auto", "cpu", "cuda");
var WORK_DIR = "";          // the private temporary folder, removed by cleanUp()
var PLAIN_HEADLESS = false; // plain ImageJ without a display: run("...") commands are unavailable
var SELFDEN_PYTHON = "";   // the Python interpreter selfden runs on, "" if unknown (see pythonOf)
var LAST_ANSWER = "";      // what the last `CANDIDATE --version` printed (see selfdenVersion)
var CAN_ASK = false;       // interactive run with a display: may ask where selfden is

// A macro block, so that Plugins > Macros > Install... adds a menu command; running the file runs it.
macro "selfden denoise" {
	main();
}

function main() {
	argument = scriptedArgument();
	scripted = lengthOf(String.trim(argument)) > 0;
	PLAIN_HEADLESS = prepareHeadless();
	headless = "" + call("java.awt.GraphicsEnvironment.isHeadless");
	CAN_ASK = !scripted && headless != "true";
	if (scripted) {
		parseArguments(argument);
		settings = settingsFromArguments();
	} else {
		settings = settingsFromDialog();
	}
	denoiseImage(settings);
}

// ----------------------------------------------------------------------------- settings
// settings is an array: model, input, output, samples, std, device, tile_size, selfden, tmpdir, tta, overwrite.

function settingsFromArguments() {
	model = argumentValue("model", "");
	input = argumentValue("input", "");
	output = argumentValue("output", "");
	samples = parseCount(argumentValue("samples", "0"), "samples");
	std = parseFlag(argumentValue("std", "false"), "std");
	device = parseDevice(argumentValue("device", "auto"));
	tile = parseCount(argumentValue("tile_size", "0"), "tile_size");
	selfden = argumentValue("selfden", "");
	tmpdir = argumentValue("tmpdir", getDirectory("temp"));
	tta = parseFlag(argumentValue("tta", "false"), "tta");
	overwrite = parseFlag(argumentValue("overwrite", "false"), "overwrite");
	return newArray(model, input, output, samples, std, device, tile, selfden, tmpdir, tta, overwrite);
}

function settingsFromDialog() {
	if (nImages == 0) fail("no image is open: open the image to denoise first.");
	Dialog.create("selfden denoise " + VERSION);
	Dialog.addMessage("Denoise \"" + getTitle() + "\" with a selfden / bioimage.io model (ONNX weights).");
	Dialog.addFile("Model (folder, its rdf.yaml, or .zip)", call("ij.Prefs.get", PREFS + "model", ""));
	Dialog.addNumber("COSDD samples (0 = direct denoiser)", parseInt(call("ij.Prefs.get", PREFS + "samples", "0")));
	Dialog.addCheckbox("Uncertainty map (std over the samples)", parseFlag(call("ij.Prefs.get", PREFS + "std", "false"), "std"));
	Dialog.addCheckbox("Average the flips/rotations it was trained with (tta; up to 8x the time)", parseFlag(call("ij.Prefs.get", PREFS + "tta", "false"), "tta"));
	Dialog.addChoice("Device", DEVICES, call("ij.Prefs.get", PREFS + "device", "auto"));
	Dialog.addNumber("Tile size (0 = model's suggestion)", 0);
	Dialog.addFile("selfden executable (empty: find it)", "");
	Dialog.addMessage("Help: fiji_macros/README.md in the selfden sources.");
	Dialog.show();
	model = modelFolder(Dialog.getString());
	samples = parseCount("" + Dialog.getNumber(), "samples");
	std = Dialog.getCheckbox();
	tta = Dialog.getCheckbox();
	device = Dialog.getChoice();
	tile = parseCount("" + Dialog.getNumber(), "tile size");
	selfden = Dialog.getString();
	call("ij.Prefs.set", PREFS + "model", model);
	call("ij.Prefs.set", PREFS + "samples", "" + samples);
	if (std) call("ij.Prefs.set", PREFS + "std", "true");
	else call("ij.Prefs.set", PREFS + "std", "false");
	if (tta) call("ij.Prefs.set", PREFS + "tta", "true");
	else call("ij.Prefs.set", PREFS + "tta", "false");
	call("ij.Prefs.set", PREFS + "device", device);
	// The dialog only shows the result (no output file), so there is nothing to overwrite.
	return newArray(model, "", "", samples, std, device, tile, selfden, getDirectory("temp"), tta, false);
}

// ----------------------------------------------------------------------------- the work
function denoiseImage(settings) {
	model = modelFolder(settings[0]);
	input = settings[1];
	output = settings[2];
	selfden = String.trim(settings[7]);
	if (model == "") fail("no model given: pass model=[/path/to/model folder or .zip] (selfden train writes RUN/model).");
	selfden = findSelfden(selfden, CAN_ASK);
	checkOutputPath(output, settings[4], settings[10]);
	original = targetImage(input);
	if (bitDepth() == 24) fail("\"" + getTitle() + "\" is an RGB image: convert it (Image > Type > 8-bit) or split its channels (Image > Color > Split Channels) first.");
	WORK_DIR = makeWorkDir(settings[8]);
	tmpIn = WORK_DIR + "input.tif";
	tmpOut = WORK_DIR + "denoised.tif";
	saveCopy(original, tmpIn);
	transcript = runSelfden(selfden, inferArguments(model, tmpIn, tmpOut, settings, true));
	if (!File.exists(tmpOut)) fail(failureMessage(transcript, selfden));
	results = openResults(original, tmpOut, settings[4]);
	cleanUp();
	if (output != "") saveResults(results, output);
	if (input != "") closeImage(original);
	selectImage(results[0]);
	print("[selfden] done: " + getTitle());
}

function targetImage(input) {
	if (input == "") {
		if (nImages == 0) fail("no image is open and no input=[...] was given.");
		return getImageID();
	}
	if (!File.exists(input)) fail("input image not found: " + input + "; give the full path of an existing image file.");
	open(input);
	return getImageID();
}

// Before any work: a bad or existing output (and its _std.tif with std) stops the macro, unless overwrite.
function checkOutputPath(output, wantStd, overwrite) {
	if (output == "") return;
	lower = toLowerCase(output);
	if (!endsWith(lower, ".tif") && !endsWith(lower, ".tiff")) fail("output must be a .tif file, got " + output);
	parent = File.getParent(output);
	if (!File.isDirectory(parent)) fail("output folder does not exist: " + parent);
	if (overwrite) return;
	if (File.exists(output)) fail(output + " exists; pass overwrite=true to replace it or choose another output.");
	stdOutput = substring(output, 0, lastIndexOf(output, ".")) + "_std.tif";
	if (wantStd && File.exists(stdOutput)) fail(stdOutput + " exists; pass overwrite=true to replace it or choose another output.");
}

function openResults(original, tmpOut, wantStd) {
	selectImage(original);
	title = stripImageExtension(getTitle());
	denoised = openResult(original, tmpOut, title + "_denoised", true);
	// newArray(number) would make an array of that size, and image IDs are numbers.
	single = newArray(1);
	single[0] = denoised;
	if (!wantStd) return single;
	stdPath = findStdMap(tmpOut);
	if (stdPath == "") {
		print("[selfden] no std map was written (the model may have no sampler); only the denoised image is shown.");
		return single;
	}
	std = openResult(original, stdPath, title + "_denoised_std", false);
	return newArray(denoised, std);
}

// The std map is the other result file selfden wrote next to the denoised one (its name holds "std").
function findStdMap(tmpOut) {
	files = getFileList(WORK_DIR);
	for (i = 0; i < files.length; i++) {
		path = WORK_DIR + files[i];
		if (path != tmpOut) {
			if (indexOf(toLowerCase(files[i]), "std") >= 0) return path;
		}
	}
	return "";
}

function openResult(original, path, title, sameDisplayRange) {
	selectImage(original);
	Stack.getDimensions(width, height, channels, slices, frames);
	getVoxelSize(pixelWidth, pixelHeight, pixelDepth, unit);
	interval = Stack.getFrameInterval();
	Stack.getUnits(xUnit, yUnit, zUnit, timeUnit, valueUnit);
	Stack.getPosition(channel, slice, frame);
	getMinAndMax(displayMin, displayMax);
	open(path);
	rename(title);
	if (getWidth() != width || getHeight() != height || nSlices != channels * slices * frames)
		fail("selfden wrote " + getWidth() + "x" + getHeight() + "x" + nSlices + " pixels for a " + width + "x" + height + "x" + (channels * slices * frames) + " image; please report this.");
	if (nSlices > 1) Stack.setDimensions(channels, slices, frames);
	setVoxelSize(pixelWidth, pixelHeight, pixelDepth, unit);
	if (frames > 1) {
		Stack.setFrameInterval(interval);
		Stack.setTUnit(timeUnit);
	}
	if (nSlices > 1) Stack.setPosition(channel, slice, frame);
	if (sameDisplayRange) setMinAndMax(displayMin, displayMax);
	else resetMinAndMax();
	return getImageID();
}

function saveResults(results, output) {
	selectImage(results[0]);
	save(output);
	print("[selfden] saved " + output);
	if (results.length < 2) return;
	stdOutput = substring(output, 0, lastIndexOf(output, ".")) + "_std.tif";
	selectImage(results[1]);
	save(stdOutput);
	print("[selfden] saved " + stdOutput);
}

function closeImage(image) {
	selectImage(image);
	close();
}

// The "shared:" sections below are the same in every selfden macro that has them (a test
// checks): edit them in selfden_denoise.ijm and copy them over.

// ----------------------------------------------------------------------------- shared: temporary copies
function makeWorkDir(base) {
	if (!endsWith(base, "/") && !endsWith(base, "\\")) base = base + File.separator;
	if (!File.isDirectory(base)) fail("temporary folder does not exist: " + base);
	for (attempt = 0; attempt < 100; attempt++) {
		dir = base + "selfden_" + d2s(getTime(), 0) + "_" + IJ.pad(floor(random() * 1000000), 6) + File.separator;
		if (!File.exists(dir)) {
			File.makeDirectory(dir);
			if (File.isDirectory(dir)) return dir;
		}
	}
	fail("could not create a temporary folder in " + base + "; check that it is writable.");
}

// Saves the pixels of the image without attaching the image to the temporary file: with a GUI
// a duplicate is saved (save() would make File > Save and Revert point at the deleted copy).
function saveCopy(image, path) {
	selectImage(image);
	if (PLAIN_HEADLESS) {
		save(path);
		return;
	}
	wasBatch = is("Batch Mode");
	if (!wasBatch) setBatchMode(true);
	hadSelection = selectionType() != -1;
	if (hadSelection) run("Select None");
	run("Duplicate...", "title=[selfden input] duplicate");
	save(path);
	close();
	selectImage(image);
	if (hadSelection) run("Restore Selection");
	if (!wasBatch) setBatchMode(false);
}

function stripImageExtension(title) {
	lower = toLowerCase(title);
	extensions = newArray(".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".npy");
	for (i = 0; i < extensions.length; i++)
		if (endsWith(lower, extensions[i])) return substring(title, 0, lengthOf(title) - lengthOf(extensions[i]));
	return title;
}

// ----------------------------------------------------------------------------- shared: finding selfden
// The selfden executable, tried in this order: the one given (selfden=, or the dialog's field);
// the one remembered from the last run (see rememberedFile); every folder on
// the PATH; the usual install places (~/.local/bin for pip --user and pipx, $PIPX_BIN_DIR,
// conda/mamba bases and their envs/*, $CONDA_PREFIX, $VIRTUAL_ENV). A candidate counts only if
// `CANDIDATE --version` prints "selfden VERSION". The one found is remembered. When none is
// found, an interactive run asks for it; a scripted or headless run stops, saying what was tried.

// (In ImageJ 1.53 "return userFunction(...)" can fail after nested calls: results go through variables.)
function findSelfden(given, canAsk) {
	if (given != "") {
		found = checkedSelfden(given, "given");
		return found;
	}
	remembered = rememberedSelfden();
	if (remembered != "") {
		version = selfdenVersion(remembered);
		if (version != "") {
			found = useSelfden(remembered, version, "remembered from an earlier run");
			return found;
		}
		print("[selfden] the remembered " + remembered + " no longer works (" + LAST_ANSWER + "); looking for selfden again.");
	}
	onPath = pathCandidates();
	usual = usualCandidates();
	candidates = Array.concat(onPath, usual);
	seen = "\n";
	rejected = "";
	for (i = 0; i < candidates.length; i++) {
		candidate = candidates[i];
		isNew = indexOf(seen, "\n" + candidate + "\n") < 0;
		if (isNew) seen = seen + candidate + "\n";
		if (isNew && File.exists(candidate) && !File.isDirectory(candidate)) {
			version = selfdenVersion(candidate);
			if (version != "") {
				found = useSelfden(candidate, version, "found");
				return found;
			}
			rejected = rejected + "\n  " + candidate + " (its --version printed: " + LAST_ANSWER + ")";
		}
	}
	print("[selfden] looked for selfden at:\n  " + replace(String.trim(seen), "\n", "\n  "));
	text = notFoundText(remembered, rejected);
	if (!canAsk) fail(text);
	found = askForSelfden(text);
	return found;
}

function checkedSelfden(path, how) {
	version = selfdenVersion(path);
	if (version == "")
		fail("selfden=" + path + " is not a working selfden: `" + path + " --version` printed: " + LAST_ANSWER + ".\n" + howToGiveSelfden());
	found = useSelfden(path, version, how);
	return found;
}

// "selfden VERSION" when `candidate --version` prints it, else "" (LAST_ANSWER keeps what it printed).
function selfdenVersion(candidate) {
	answer = String.trim(exec(candidate, "--version"));
	first = answer;
	newline = indexOf(answer, "\n");
	if (newline >= 0) first = String.trim(substring(answer, 0, newline));
	LAST_ANSWER = first;
	if (first == "") LAST_ANSWER = "nothing";
	if (matches(first, "selfden [0-9][^ ]*")) return first;
	return "";
}

function useSelfden(path, version, how) {
	remembered = rememberedSelfden();
	if (remembered != path) rememberSelfden(path);
	print("[selfden] using " + path + " (" + version + ", " + how + ")");
	python = pythonOf(path, version);
	SELFDEN_PYTHON = python;
	if (SELFDEN_PYTHON == "") print("[selfden] no Python interpreter of this selfden found: selfden's error messages can only be seen in a terminal.");
	return path;
}

// The remembered executable lives in selfden_executable.txt in ImageJ's preferences folder
// (~/.imagej, or Fiji's): written at once, whereas ij.Prefs values are saved only when ImageJ quits
// normally (never in headless batch runs).
function rememberedFile() {
	folder = call("ij.Prefs.getPrefsDir");
	file = inFolder(folder, "selfden_executable.txt");
	return file;
}

// Before this file, the dialogs kept the path they were given in ImageJ's selfden.executable.
function rememberedSelfden() {
	file = rememberedFile();
	remembered = "";
	if (File.exists(file)) remembered = String.trim(File.openAsString(file));
	else remembered = call("ij.Prefs.get", "selfden.executable", "");
	return remembered;
}

function rememberSelfden(path) {
	folder = call("ij.Prefs.getPrefsDir");
	if (!File.isDirectory(folder)) File.makeDirectory(folder);
	file = rememberedFile();
	File.saveString(path, file);
	if (!File.exists(file)) print("[selfden] could not remember " + path + " in " + file);
}

function askForSelfden(text) {
	Dialog.create("Where is selfden?");
	Dialog.addMessage(text);
	Dialog.addFile("selfden executable", "");
	Dialog.show();
	path = String.trim(Dialog.getString());
	if (path == "") fail("no selfden executable given.\n" + howToGiveSelfden());
	found = checkedSelfden(path, "chosen");
	return found;
}

function notFoundText(remembered, rejected) {
	text = "selfden was not found. Tried, in order:";
	if (remembered != "") text = text + "\n- the selfden remembered from an earlier run: " + remembered;
	text = text + "\n- " + selfdenName() + " in every folder on the PATH";
	text = text + "\n- ~/.local/bin (pip --user, pipx), $PIPX_BIN_DIR, $CONDA_PREFIX, $VIRTUAL_ENV";
	text = text + "\n- conda/mamba: ~/miniconda3, ~/anaconda3, ~/miniforge3, ~/mambaforge, ~/micromamba, ~/.conda and their envs/*";
	if (rejected != "") text = text + "\nThese answered --version with something else:" + rejected;
	return text + "\n(the Log lists every path tried)\n" + howToGiveSelfden();
}

function howToGiveSelfden() {
	return "Give the selfden of your environment once: selfden=[/full/path/to/selfden] when scripted, or the dialog's "
		+ "\"selfden executable\" field. In a terminal where selfden works, `which selfden` (Windows: `where selfden`) "
		+ "prints that path. It is remembered for later runs.";
}

function isWindows() {
	return startsWith(getInfo("os.name"), "Windows");
}

function selfdenName() {
	if (isWindows()) return "selfden.exe";
	return "selfden";
}

function environmentVariable(name) {
	value = "" + call("java.lang.System.getenv", name);
	if (value == "null") return "";
	return String.trim(value);
}

function inFolder(folder, name) {
	if (endsWith(folder, "/") || endsWith(folder, "\\")) return folder + name;
	return folder + File.separator + name;
}

// selfden in a folder; on Windows also in its Scripts\ (a Python or conda environment's root).
function binCandidates(folder) {
	// (newArray() and Array.concat() take a user function's result for a number: assign it first.)
	if (!isWindows()) {
		only = inFolder(folder, "selfden");
		return newArray(only);
	}
	direct = inFolder(folder, "selfden.exe");
	scripts = inFolder(folder, "Scripts");
	inScripts = inFolder(scripts, "selfden.exe");
	return newArray(direct, inScripts);
}

// The folder of an environment's scripts: bin/ (Linux, macOS) or Scripts\ (Windows).
function environmentBin(environment) {
	name = "bin";
	if (isWindows()) name = "Scripts";
	folder = inFolder(environment, name);
	return folder;
}

function pathCandidates() {
	paths = newArray(0);
	folders = split(environmentVariable("PATH"), getInfo("path.separator"));
	for (i = 0; i < folders.length; i++) {
		folder = String.trim(replace(folders[i], "\"", ""));
		if (folder != "") {
			found = binCandidates(folder);
			paths = Array.concat(paths, found);
		}
	}
	return paths;
}

function usualCandidates() {
	home = getDirectory("home");
	local = inFolder(home, ".local" + File.separator + "bin");
	folders = newArray(local);
	variables = newArray("PIPX_BIN_DIR", "CONDA_PREFIX", "VIRTUAL_ENV");
	for (i = 0; i < variables.length; i++) {
		value = environmentVariable(variables[i]);
		if (value != "" && i == 0) folders = Array.concat(folders, value);
		if (value != "" && i > 0) {
			bin = environmentBin(value);
			folders = Array.concat(folders, bin);
		}
	}
	mamba = ".local" + File.separator + "share" + File.separator + "mamba";
	bases = newArray("miniconda3", "anaconda3", "miniforge3", "mambaforge", "micromamba", ".conda", mamba);
	for (b = 0; b < bases.length; b++) {
		conda = condaFolders(inFolder(home, bases[b]));
		folders = Array.concat(folders, conda);
	}
	if (isWindows()) {
		for (b = 0; b < 4; b++) {
			conda = condaFolders("C:\\ProgramData\\" + bases[b]);
			folders = Array.concat(folders, conda);
		}
		user = subfolders(inFolder(environmentVariable("APPDATA"), "Python"), "Scripts");
		folders = Array.concat(folders, user);
	}
	if (startsWith(getInfo("os.name"), "Mac")) {
		user = subfolders(home + "Library/Python", "bin");
		folders = Array.concat(folders, user);
		folders = Array.concat(folders, "/opt/homebrew/bin");
	}
	paths = newArray(0);
	name = selfdenName();
	for (i = 0; i < folders.length; i++) {
		path = inFolder(folders[i], name);
		paths = Array.concat(paths, path);
	}
	return paths;
}

// A conda/mamba installation's own scripts folder and those of its envs/*.
function condaFolders(base) {
	if (!File.isDirectory(base)) return newArray(0);
	bin = environmentBin(base);
	folders = newArray(bin);
	environments = inFolder(base, "envs");
	if (!File.isDirectory(environments)) return folders;
	names = getFileList(environments);
	for (i = 0; i < names.length; i++) {
		if (endsWith(names[i], "/")) {
			bin = environmentBin(inFolder(environments, substring(names[i], 0, lengthOf(names[i]) - 1)));
			folders = Array.concat(folders, bin);
		}
	}
	return folders;
}

// SUB inside every subfolder of folder (e.g. %APPDATA%\Python\Python311\Scripts).
function subfolders(folder, sub) {
	found = newArray(0);
	if (!File.isDirectory(folder)) return found;
	names = getFileList(folder);
	for (i = 0; i < names.length; i++) {
		if (endsWith(names[i], "/")) {
			path = inFolder(inFolder(folder, substring(names[i], 0, lengthOf(names[i]) - 1)), sub);
			found = Array.concat(found, path);
		}
	}
	return found;
}

// ImageJ's exec() returns only a program's standard output, and selfden writes its errors on
// standard error. So selfden runs through its own Python interpreter with this constant program,
// which points standard error at standard output (on every OS, no shell) and then runs
// `python -m selfden` with the same arguments.
function pythonProgram() {
	return "import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; import os, runpy; "
		+ "os.dup2(1, 2); sys.stdout.reconfigure(errors='backslashreplace'); sys.stderr = sys.stdout; "
		+ "runpy.run_module('selfden', run_name='__main__', alter_sys=True)";
}

// The Python interpreter selfden runs on: from its script's first line (#!...), else next to it;
// accepted only if it runs the same selfden version. "" if none.
function pythonOf(selfden, version) {
	script = scriptFile(selfden);
	if (script == "") return "";
	candidates = newArray(0);
	shebang = shebangPython(script);
	if (shebang != "") candidates = Array.concat(candidates, shebang);
	folder = File.getParent(script);
	names = newArray("python3", "python");
	if (isWindows()) names = newArray("python.exe", ".." + File.separator + "python.exe");
	for (i = 0; i < names.length; i++) {
		path = inFolder(folder, names[i]);
		candidates = Array.concat(candidates, path);
	}
	program = pythonProgram();
	for (i = 0; i < candidates.length; i++) {
		if (File.exists(candidates[i])) {
			answer = String.trim(exec(candidates[i], "-c", program, "--version"));
			python = candidates[i]; // "return candidates[i]" fails in nested calls in ImageJ 1.53
			if (answer == version) return python;
		}
	}
	return "";
}

// The file behind an executable given with or without its folder ("" if not found).
function scriptFile(selfden) {
	if (indexOf(selfden, "/") >= 0 || indexOf(selfden, "\\") >= 0) return selfden;
	candidates = pathCandidates();
	for (i = 0; i < candidates.length; i++) {
		candidate = candidates[i];
		name = File.getName(candidate);
		if (name == selfden || name == selfden + ".exe") {
			if (File.exists(candidate)) return candidate;
		}
	}
	return "";
}

// The interpreter on a "#!" line: pip's scripts, pip's Windows launchers (.exe with the line
// inside) and the "#!/bin/sh" + '''exec' "PYTHON" form pip uses for long paths or spaces.
function shebangPython(script) {
	size = File.length(script); // a variable: File.length() in a comparison compares text
	if (File.isDirectory(script) || size > 2000000) return "";
	text = File.openAsString(script);
	start = indexOf(text, "#!");
	while (start >= 0) {
		end = lineEnd(text, start);
		line = String.trim(substring(text, start + 2, end));
		if (line == "/bin/sh") {
			from = indexOf(text, "'''exec' ", end);
			to = indexOf(text, " \"$0\"", from + 1);
			if (from >= 0 && to > from) line = substring(text, from + 9, to);
		}
		interpreter = firstWord(line);
		if (indexOf(toLowerCase(File.getName(interpreter)), "python") >= 0) return interpreter;
		start = indexOf(text, "#!", start + 2);
	}
	return "";
}

function lineEnd(text, start) {
	end = lengthOf(text);
	newline = indexOf(text, "\n", start);
	if (newline >= 0) end = newline;
	feed = indexOf(text, "\r", start);
	if (feed >= 0 && feed < end) end = feed;
	return end;
}

// The first word of a command line: a "quoted path" or everything up to the first space.
function firstWord(line) {
	line = String.trim(line);
	if (startsWith(line, "\"")) {
		closing = indexOf(line, "\"", 1);
		if (closing > 0) return substring(line, 1, closing);
	}
	space = indexOf(line, " ");
	if (space > 0) return substring(line, 0, space);
	return line;
}

// ----------------------------------------------------------------------------- shared: running selfden
// settings[3..6] are samples, std, device and tile size, settings[9] tta, in both selfden macros.
// overwrite: pass --overwrite (selfden infer refuses to replace an existing result without it).
function inferArguments(model, image, result, settings, overwrite) {
	args = newArray("infer", model, image, "-o", result, "--device", settings[5]);
	if (settings[6] > 0) args = Array.concat(args, newArray("--tile-size", "" + settings[6]));
	if (settings[3] > 0) args = Array.concat(args, newArray("--samples", "" + settings[3]));
	if (settings[4]) args = Array.concat(args, "--std");
	if (settings[9]) args = Array.concat(args, "--tta");
	if (overwrite) args = Array.concat(args, "--overwrite");
	return args;
}

// Runs selfden with each argument separate (no shell anywhere): through its Python interpreter
// when one was found, so that its error messages come back (see pythonProgram), else directly.
function runSelfden(selfden, args) {
	print("[selfden] " + commandLine(selfden, args));
	start = getTime();
	program = pythonProgram();
	if (SELFDEN_PYTHON != "") output = execArray(Array.concat(newArray(SELFDEN_PYTHON, "-c", program), args));
	else output = execArray(Array.concat(newArray(selfden), args));
	print("[selfden] finished in " + d2s((getTime() - start) / 1000, 1) + " s");
	return output;
}

function failureMessage(transcript, selfden) {
	line = errorLine(transcript);
	text = "selfden infer failed: " + line;
	if (line == "") text = "selfden infer failed without a message (run the command printed in the Log in a terminal to see why).";
	if (line == "" && SELFDEN_PYTHON == "")
		text = "selfden infer failed; its message could not be read here (no Python interpreter of " + selfden + " was found). Run the command printed in the Log in a terminal to see why.";
	if (indexOf(transcript, "Cannot run program") >= 0)
		text = text + "\nThe selfden executable could not be started; leave the selfden field empty to look for it again, or " + howToGiveSelfden();
	return text;
}

// The line starting with "error:" (selfden's one-line message), else the last non-empty line
// (only when selfden's error output was captured: without it the last line is not an error).
function errorLine(transcript) {
	lines = split(transcript, "\n");
	last = "";
	for (i = 0; i < lines.length; i++) {
		line = String.trim(lines[i]);
		if (startsWith(line, "error:")) return String.trim(substring(line, 6));
		if (line != "") last = line;
	}
	if (SELFDEN_PYTHON == "" && indexOf(transcript, "Cannot run program") < 0) return "";
	return last;
}

function commandLine(program, args) {
	text = quoteForDisplay(program);
	for (i = 0; i < args.length; i++) text = text + " " + quoteForDisplay(args[i]);
	return text;
}

function quoteForDisplay(text) {
	if (indexOf(text, " ") < 0 && indexOf(text, "'") < 0 && indexOf(text, "\"") < 0) return text;
	return "\"" + text + "\"";
}

// exec() takes its arguments one by one (no array form in ImageJ 1.53), hence the ladder.
function execArray(a) {
	n = a.length;
	if (n == 5) return exec(a[0], a[1], a[2], a[3], a[4]);
	if (n == 6) return exec(a[0], a[1], a[2], a[3], a[4], a[5]);
	if (n == 7) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
	if (n == 8) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
	if (n == 9) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
	if (n == 10) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);
	if (n == 11) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10]);
	if (n == 12) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]);
	if (n == 13) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12]);
	if (n == 14) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13]);
	if (n == 15) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14]);
	if (n == 16) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]);
	if (n == 17) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15], a[16]);
	if (n == 18) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15], a[16], a[17]);
	fail("internal error: " + n + " command arguments; please report this.");
}

// ----------------------------------------------------------------------------- shared: cleanup, errors
function cleanUp() {
	if (WORK_DIR == "") return;
	deleteTree(WORK_DIR);
	if (File.exists(WORK_DIR)) print("[selfden] could not remove the temporary folder " + WORK_DIR);
	WORK_DIR = "";
}

function deleteTree(dir) {
	files = getFileList(dir);
	for (i = 0; i < files.length; i++) {
		if (endsWith(files[i], "/")) deleteTree(dir + files[i]);
		else dummy = File.delete(dir + files[i]);
	}
	dummy = File.delete(dir);
}

// Removes the temporary folder, then stops with the message: a message box with a GUI, the Log
// (stdout when headless) otherwise.
function fail(message) {
	cleanUp();
	print("[selfden] " + message);
	exit(message);
}

// Plain ImageJ without a display (tests, servers) builds its menus on first use and fails; the
// failed attempt, caught inside call(), leaves an empty command table that lets open() work.
function prepareHeadless() {
	headless = "" + call("java.awt.GraphicsEnvironment.isHeadless");
	if (headless != "true") return false;
	commands = "" + call("ij.Menus.getCommands");
	if (commands != "null") return false;
	dummy = call("ij.IJ.run", "Collect Garbage");
	return true;
}

// ----------------------------------------------------------------------------- shared: argument parsing
function scriptedArgument() {
	argument = getArgument();
	if (argument != "") return argument;
	// Run as an installed command, run("selfden denoise", "model=[...]") passes its options here.
	options = "" + call("ij.Macro.getOptions");
	if (options == "null") return "";
	return options;
}

// A model picked in a file chooser is often the rdf.yaml inside the folder: use the folder.
function modelFolder(path) {
	path = String.trim(path);
	if (endsWith(path, "rdf.yaml") || endsWith(path, "rdf.yml")) return File.getParent(path);
	return path;
}

// Same parser in all selfden macros. Two formats: one key=value per line (when the argument has
// a newline), or an ImageJ option string: key=value, key=[value with spaces] (the value ends at
// a "]" followed by a space or the end) and bare keys meaning true. Values are kept in List.

function parseArguments(text) {
	List.clear();
	if (indexOf(text, "\n") >= 0) parseLines(text);
	else parseOptionString(text);
}

function parseLines(text) {
	lines = split(text, "\n");
	for (i = 0; i < lines.length; i++) {
		line = String.trim(lines[i]);
		if (line == "" || startsWith(line, "#")) continue;
		equals = indexOf(line, "=");
		if (equals < 0) storeArgument(line, "true");
		else storeArgument(substring(line, 0, equals), substring(line, equals + 1));
	}
}

// Scanning compares single characters held in variables: the macro language evaluates both
// sides of && and ||, and treats a user function's result in a comparison as a number.
function parseOptionString(text) {
	n = lengthOf(text);
	i = skipSpaces(text, 0);
	while (i < n) {
		start = i;
		i = scanWord(text, i, true);
		key = substring(text, start, i);
		value = "true";
		c = charAt(text, i);
		if (c == "=") {
			i++;
			c = charAt(text, i);
			if (c == "[") {
				end = closingBracket(text, i + 1);
				if (end < 0) fail("argument " + key + "=[... has no closing ]");
				value = substring(text, i + 1, end);
				i = end + 1;
			} else {
				start = i;
				i = scanWord(text, i, false);
				value = substring(text, start, i);
			}
		}
		storeArgument(key, value);
		i = skipSpaces(text, i);
	}
}

// Index of the first space (or "=" when stopAtEquals) at or after i; the length if none.
function scanWord(text, i, stopAtEquals) {
	n = lengthOf(text);
	while (i < n) {
		c = substring(text, i, i + 1);
		if (isSpace(c)) return i;
		if (stopAtEquals) {
			if (c == "=") return i;
		}
		i++;
	}
	return n;
}

// A value in brackets ends at the first "]" followed by a space or the end of the text.
function closingBracket(text, from) {
	n = lengthOf(text);
	for (j = from; j < n; j++) {
		c = substring(text, j, j + 1);
		next = charAt(text, j + 1);
		if (c == "]") {
			if (next == "") return j;
			if (isSpace(next)) return j;
		}
	}
	return -1;
}

function skipSpaces(text, i) {
	n = lengthOf(text);
	while (i < n) {
		c = substring(text, i, i + 1);
		if (!isSpace(c)) return i;
		i++;
	}
	return n;
}

function charAt(text, i) {
	if (i >= lengthOf(text)) return "";
	return substring(text, i, i + 1);
}

function isSpace(c) {
	if (c == " " || c == "\t" || c == "\r") return true;
	return false;
}

function storeArgument(key, value) {
	key = replace(toLowerCase(String.trim(key)), "-", "_");
	for (k = 0; k < KNOWN_KEYS.length; k++) {
		if (key == KNOWN_KEYS[k]) {
			List.set(key, String.trim(value));
			return;
		}
	}
	fail("unknown argument '" + key + "'; expected " + String.join(KNOWN_KEYS, ", "));
}

function argumentValue(key, fallback) {
	value = List.get(key);
	if (value == "") return fallback;
	return value;
}

function parseCount(text, name) {
	value = parseInt(String.trim(text));
	if (isNaN(value) || value < 0 || value != parseFloat(String.trim(text)))
		fail(name + " must be a whole number >= 0, got '" + text + "'");
	return value;
}

function parseFlag(text, name) {
	lower = toLowerCase(String.trim(text));
	if (lower == "true" || lower == "1" || lower == "yes" || lower == "on") return true;
	if (lower == "false" || lower == "0" || lower == "no" || lower == "off" || lower == "") return false;
	fail(name + " must be true or false, got '" + text + "'");
}

function parseDevice(text) {
	lower = toLowerCase(String.trim(text));
	for (d = 0; d < DEVICES.length; d++) {
		device = DEVICES[d];
		if (lower == device) return device;
	}
	fail("device must be auto, cpu or cuda, got '" + text + "'");
}
