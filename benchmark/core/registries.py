"""The project's registries and their built-in entries.

Built-ins are registered lazily (``"module:attr"``) so that ``aft-bench ls`` and ``aft-bench --help``
import neither torch nor any model code. Adding a method is one file plus one line here; third-party
code may also use ``@ATTRIBUTIONS.register("name")`` as a decorator.
"""

from __future__ import annotations

from aft_bench.core.registry import Registry

ENCODERS: Registry = Registry("encoder")
ENCODER_BACKENDS: Registry = Registry("encoder backend")
ATTRIBUTIONS: Registry = Registry("attribution")
TASKS: Registry = Registry("task")
DATASETS: Registry = Registry("dataset")
METRICS: Registry = Registry("metric")
OBJECTIVES: Registry = Registry("objective")
TARGETS: Registry = Registry("target")
CLASSIFIERS: Registry = Registry("classifier")
RETRAINERS: Registry = Registry("retrainer")
ATTACKS: Registry = Registry("attack")
REGULARIZERS: Registry = Registry("regularizer")
VLMS: Registry = Registry("vlm")
FIGURES: Registry = Registry("task figure")

# Named encoders (factories taking ``device``). Any open_clip model is reachable by spec as well:
# ``ARCH:TAG``, ``hf-hub:ORG/NAME``, ``ckpt:PATH`` and ``ARCH[:TAG]@PATH`` (see aft_bench.models.loading).
# Encoder backends: one Encoder subclass per library (aft_bench.models.backends), each reading its spec form.
ENCODER_BACKENDS.register("open_clip", "aft_bench.models.backends.open_clip:OpenClipEncoder",
                          help="open_clip CLIP models: ARCH:TAG, hf-hub:ORG/NAME, ARCH[:TAG]@PATH, ckpt:PATH")
ENCODER_BACKENDS.register("transformers", "aft_bench.models.backends.transformers:HFClipEncoder",
                          help="transformers CLIP models: hf:ORG/NAME (local cache) or hf:/path/to/folder")
ENCODER_BACKENDS.register("timm", "aft_bench.models.backends.timm:TimmEncoder",
                          help="timm image classifiers: timm:NAME or timm:NAME@PATH; pre-logits embeddings, no text")
ENCODER_BACKENDS.register("toy", "aft_bench.models.backends.named:ToyEncoders",
                          help="the registered named encoders (the bundled toy CLIPs and their fine-tunes)")

ENCODERS.register("toy", "aft_bench.toys.clip.store:load_toy_encoder", help="bundled tiny CLIP trained on the shapes world")
ENCODERS.register("toy-aft", "aft_bench.toys.clip.finetunes:load_toy_aft",
                  help="the toy CLIP fine-tuned with AFT (eps 4/255, eta = sigma = 1/255), trained on first use")
ENCODERS.register("toy-fare", "aft_bench.toys.clip.finetunes:load_toy_fare",
                  help="the toy CLIP fine-tuned with FARE (eps 4/255), trained on first use")
ENCODERS.register("toy-tecoa", "aft_bench.toys.clip.finetunes:load_toy_tecoa",
                  help="the toy CLIP fine-tuned with TeCoA on the shapes classes (eps 4/255), trained on first use")
ENCODERS.register("toy-pmg-aft", "aft_bench.toys.clip.finetunes:load_toy_pmg_aft",
                  help="the toy CLIP fine-tuned with PMG-AFT on the shapes classes (eps 4/255), trained on first use")
ENCODERS.register("toy-shortcut", "aft_bench.toys.clip.store:load_toy_shortcut_encoder",
                  help="a toy CLIP trained on the shapes world with a planted class pattern (2/255), trained on "
                       "first use")
ENCODERS.register("toy-shortcut-aft", "aft_bench.toys.clip.finetunes:load_toy_shortcut_aft",
                  help="toy-shortcut fine-tuned with AFT (eps 4/255) on the planted-shortcut world, trained on "
                       "first use")
ENCODERS.register("toy-shortcut-fare", "aft_bench.toys.clip.finetunes:load_toy_shortcut_fare",
                  help="toy-shortcut fine-tuned with FARE (eps 4/255) on the planted-shortcut world, trained on "
                       "first use")

# Vision-language models by name (factories returning a save_pretrained folder); any LLaVA folder or cached
# Hugging Face repository is reachable by spec as well (aft_bench.models.vlm.loading).
VLMS.register("toy", "aft_bench.toys.vlm.folder:toy_vlm_folder",
              help="the embedded toy LLaVA (toy CLIP tower, projector, small LM on the shapes world), built on use")

ENCODERS.register("control-mask", "aft_bench.toys.controls.mask_gated:load_mask_control",
                  help="positive control: a random ViT that sees only the pixels inside each shapes sample's mask")

# Task figures (``aft-bench figure --task NAME``: functions taking a RunConfig and an output path).
FIGURES.register("vlm_attention", "aft_bench.reporting.vlm_attention:vlm_figure",
                 help="paper Fig. 7: an image and LLaVA's attention map of each answer token, titled with the token")

OBJECTIVES.register("aft", "aft_bench.training.objectives.aft:AFTObjective",
                    help="unsupervised AFT, paper Eq. 7 (squared distance to the original embedding minus h)")
OBJECTIVES.register("fare", "aft_bench.training.objectives.fare:FAREObjective",
                    help="FARE (Schlarmann et al. 2024): L_inf-bounded embedding attack, no penalty")
OBJECTIVES.register("aft-supervised", "aft_bench.training.objectives.aft_supervised:SupervisedAFTObjective",
                    help="supervised AFT, paper Eq. 1 (image-caption similarity; needs captions)")
OBJECTIVES.register("tecoa", "aft_bench.training.objectives.tecoa:TeCoAObjective",
                    help="TeCoA (Mao et al. 2023): zero-shot cross-entropy under L_inf PGD; needs class labels")
OBJECTIVES.register("pmg-aft", "aft_bench.training.objectives.pmg_aft:PMGAFTObjective",
                    help="PMG-AFT (Wang et al. 2024): TeCoA + alpha KL to the original model + beta KL to clean")

# Regularisers h of the AFT inner maximisation (factories taking a TrainConfig; radii in its 1/255 units).
REGULARIZERS.register("box", "aft_bench.training.regularizers:box_regularizer",
                      help="h(v) = eta/(2 eps) ||v||^2 inside the L_inf ball of radius eps (paper Eq. 5)")
REGULARIZERS.register("box-pixelnorm", "aft_bench.training.regularizers:box_pixelnorm_regularizer",
                      help="the published code's penalty: eta/(2 eps) x sum of per-pixel channel L2 norms, in the ball")
REGULARIZERS.register("group-pixel", "aft_bench.training.regularizers:group_pixel_regularizer",
                      help="eta/(2 eps) ||v||^2, each pixel's channel L2 norm <= eps (conjugate of paper Eq. 22)")
REGULARIZERS.register("group-patch", "aft_bench.training.regularizers:group_patch_regularizer",
                      help="the same with groups of --group-patch x --group-patch pixels (conjugate of paper Eq. 22)")
REGULARIZERS.register("elastic-net", "aft_bench.training.regularizers:elastic_net_regularizer",
                      help="the conjugate of the smoothed elastic net (paper Eq. 21): separable, no hard ball")

ATTRIBUTIONS.register(
    "simple_gradient",
    "aft_bench.attributions.simple_gradient:SimpleGradient",
    help="|d cos(image, text) / d pixels| summed over colour channels (Simonyan et al. 2013)",
)
ATTRIBUTIONS.register(
    "smoothgrad",
    "aft_bench.attributions.smoothgrad:SmoothGrad",
    help="mean simple gradient over noisy copies (Smilkov et al. 2017)",
)
ATTRIBUTIONS.register(
    "gradcam",
    "aft_bench.attributions.gradcam:GradCAM",
    help="gradient-weighted activations of a block / conv stage (Selvaraju et al. 2017)",
)

ATTRIBUTIONS.register("attention_map", "aft_bench.attributions.attention_map:AttentionMap",
                      help="class-token attention to the patches in one ViT block (AFT paper Fig. 4)")
ATTRIBUTIONS.register("rollout", "aft_bench.attributions.rollout:Rollout",
                      help="attention rollout across ViT blocks (Abnar & Zuidema 2020)")
ATTRIBUTIONS.register("grad_eclip", "aft_bench.attributions.grad_eclip:GradECLIP",
                      help="gradient-weighted values with loosened attention (Zhao et al. 2024)")
ATTRIBUTIONS.register("m2ib", "aft_bench.attributions.m2ib:M2IB",
                      help="multi-modal information bottleneck, batched (Wang et al. 2023)")
ATTRIBUTIONS.register("random", "aft_bench.attributions.random:RandomBaseline",
                      help="uniform random map (ROAR's random-removal baseline)")

TARGETS.register("text", "aft_bench.evaluation.targets.text:text_target",
                 help="cosine similarity with the embedding of the image's prompt (zero-shot)")
TARGETS.register("probe", "aft_bench.evaluation.targets.probe:probe_target",
                 help="class logit of a linear probe on frozen image embeddings (probe_class=true|top1)")
TARGETS.register("head", "aft_bench.evaluation.targets.head:head_target",
                 help="the classifier's own logit of the sample's class (probe_class=true) or its top-1 (timm models)")

CLASSIFIERS.register("zero_shot", "aft_bench.evaluation.classifiers:ZeroShotClassifier",
                     help="CLIP's zero-shot head: logit scale x cosine with the class-prompt embeddings")
CLASSIFIERS.register("probe", "aft_bench.evaluation.classifiers:ProbeClassifier",
                     help="the run's linear probe on frozen image embeddings (probe_* options)")

RETRAINERS.register("probe", "aft_bench.evaluation.removal.retrainers:ProbeRetrainer",
                    help="ROAR: a linear probe on the frozen encoder's embeddings of the removed images")
RETRAINERS.register("cnn", "aft_bench.evaluation.removal.retrainers:CnnRetrainer",
                    help="ROAR: a small CNN trained from scratch on the removed images")

ATTACKS.register("apgd-ce", "aft_bench.evaluation.attacks.ensemble:apgd_ce",
                 help="APGD with the cross-entropy loss (Croce & Hein 2020)")
ATTACKS.register("apgd-t", "aft_bench.evaluation.attacks.ensemble:apgd_t",
                 help="APGD with the targeted DLR loss against the runners-up (Croce & Hein 2020)")

TASKS.register("pointing_game", "aft_bench.tasks.pointing_game:PointingGame",
               help="pointing game, PG-energy and segmentation scores (paper Table 1)")
TASKS.register("sparsity", "aft_bench.tasks.sparsity:Sparsity",
               help="Gini index of each attribution map, higher = sparser (paper Table 3)")
TASKS.register("ssim_robustness", "aft_bench.tasks.ssim_robustness:SsimRobustness",
               help="SSIM of clean vs Gaussian-noise maps, one column per sigma (paper Table 7)")
TASKS.register("clip_dissect", "aft_bench.tasks.clip_dissect:ClipDissect",
               help="CLIP-Dissect: each neuron's concept by soft-WPMI against a probe CLIP (paper Fig. 5)")
TASKS.register("network_dissection", "aft_bench.tasks.network_dissection:NetworkDissection",
               help="Network Dissection: units whose top-quantile regions match concepts, IoU > 0.04 (paper Fig. 6)")
TASKS.register("roar", "aft_bench.tasks.roar:Roar",
               help="remove and retrain: accuracy after replacing the top-k% salient pixels by the mean (Fig. 3)")
TASKS.register("zero_shot", "aft_bench.tasks.zero_shot:ZeroShot",
               help="zero-shot accuracy, clean and under APGD-CE + APGD-T (paper Table 2 / Table 9)")
TASKS.register("road", "aft_bench.tasks.road:Road",
               help="remove and debias: unchanged classifier on noisy-linear-imputed images (Rong et al. 2022)")
TASKS.register("class_entropy", "aft_bench.tasks.class_entropy:ClassEntropy",
               help="entropy of a linear probe's prediction over all classes and within a category (paper Table 8)")
TASKS.register("shortcut_reliance", "aft_bench.tasks.shortcut_reliance:ShortcutReliance",
               help="share of pattern-swapped shapes images that follow the planted pattern (needs shortcut=A)")
TASKS.register("vlm_attention", "aft_bench.tasks.vlm_attention:VlmAttention",
               help="LLaVA per-token attention maps with each encoder as its tower: PG ... Gini, answer accuracy")
TASKS.register("sanity_checks", "aft_bench.tasks.sanity_checks:SanityChecks",
               help="similarity of maps before and after re-initialising the encoder's blocks (Adebayo et al. 2018)")
METRICS.register("entropy_entire", "aft_bench.metrics.entropy:ENTROPY_ENTIRE",
                 help="entropy (nats) of a classifier's softmax over all classes")
METRICS.register("entropy_category", "aft_bench.metrics.entropy:ENTROPY_CATEGORY",
                 help="entropy (nats) of a classifier's softmax within the true class's category, renormalised")
METRICS.register("spearman", "aft_bench.metrics.similarity:SPEARMAN",
                 help="Spearman rank correlation of two maps (ties: average ranks)")
METRICS.register("spearman_abs", "aft_bench.metrics.similarity:SPEARMAN_ABS",
                 help="Spearman rank correlation of the absolute values of two maps")
METRICS.register("hog", "aft_bench.metrics.similarity:HOG_SIMILARITY",
                 help="Pearson correlation of the HOG features of two maps (Dalal & Triggs 2005)")

DATASETS.register("shapes", "aft_bench.data.shapes:ShapesDataset",
                  help="generated shapes world with captions and pixel masks (embedded default)")
DATASETS.register("imagenet_s", "aft_bench.data.imagenet_s:ImageNetS",
                  help="ImageNet-S validation (ImageNetS919/S50/S300), root via --data-root")

DATASETS.register("imagenet_seg", "aft_bench.data.imagenet_seg:ImageNetSegmentation",
                  help="ImageNet-Segmentation gtsegs_ijcv.mat (4,276 images, object masks); --data-root = the .mat")
DATASETS.register("imagenette", "aft_bench.data.imagenette:Imagenette",
                  help="Imagenette/Imagewoof class folders (train/, val/); --dataset-arg split=val|train")
DATASETS.register("cub", "aft_bench.data.cub:CUB200",
                  help="CUB-200-2011 birds, official split; --data-root = CUB_200_2011, split=test|train|all")
DATASETS.register("caltech256", "aft_bench.data.caltech256:Caltech256",
                  help="Caltech-256 (256_ObjectCategories), seeded stratified split; split, train_fraction, split_seed")
DATASETS.register("image_folder", "aft_bench.data.image_folder:ImageFolder",
                  help="class folders (ImageNet val/-R/-Sketch, EuroSAT, DTD, ...); split, classnames=FILE, files=FILE")
DATASETS.register("cifar10", "aft_bench.data.cifar:CIFAR10",
                  help="CIFAR-10 python batches (cifar-10-batches-py), split=test|train; read without plain pickle")
DATASETS.register("cifar100", "aft_bench.data.cifar:CIFAR100",
                  help="CIFAR-100 python batches (cifar-100-python), fine labels, split=test|train")
DATASETS.register("stl10", "aft_bench.data.stl10:STL10", help="STL-10 binary (stl10_binary), split=test|train")
DATASETS.register("pcam", "aft_bench.data.pcam:PCAM",
                  help="PatchCamelyon HDF5 (camelyonpatch_level_2_split_*), split=test|train|valid")
DATASETS.register("oxford_pets", "aft_bench.data.oxford_pets:OxfordPets",
                  help="Oxford-IIIT Pet (images/, annotations/test.txt), split=test|trainval")
DATASETS.register("fgvc_aircraft", "aft_bench.data.fgvc_aircraft:FGVCAircraft",
                  help="FGVC-Aircraft 2013b variants (data/images/, images_variant_*.txt), split=test|trainval|...")
DATASETS.register("flowers102", "aft_bench.data.flowers102:Flowers102",
                  help="Flowers-102 (jpg/, imagelabels.mat, setid.mat); classnames=FILE required, split=test|train|val")
DATASETS.register("stanford_cars", "aft_bench.data.stanford_cars:StanfordCars",
                  help="Stanford Cars (cars_test/, devkit/cars_meta.mat, cars_test_annos_withlabels.mat)")
DATASETS.register("broden", "aft_bench.data.broden:Broden",
                  help="Broden (broden1_224/227) images with pixel and image concept labels, for dissection")

METRICS.register("pg", "aft_bench.metrics.pointing:POINTING_GAME", help="argmax of the map inside the mask")
METRICS.register("pg_energy", "aft_bench.metrics.pointing:PG_ENERGY", help="share of map mass inside the mask")
METRICS.register("pixel_acc", "aft_bench.metrics.segmentation:PIXEL_ACCURACY",
                 help="pixel accuracy of the map thresholded at its mean")
METRICS.register("ap", "aft_bench.metrics.segmentation:AVERAGE_PRECISION",
                 help="foreground AP: the map ranks the pixels as scores of the object alone")
METRICS.register("ap_two_class", "aft_bench.metrics.segmentation:AVERAGE_PRECISION_TWO_CLASS",
                 help="AP pooled over both classes (map vs foreground, 1 - map vs background), Chefer et al.'s code")
METRICS.register("mask_iou", "aft_bench.metrics.segmentation:MASK_IOU",
                 help="IoU of the map thresholded at its mean with the mask")
METRICS.register("pixel_acc_pooled", "aft_bench.metrics.pooled:PIXEL_ACC_POOLED",
                 help="pixel accuracy pooled over the dataset from per-sample counts (Chefer et al.'s code)")
METRICS.register("miou_pooled", "aft_bench.metrics.pooled:MIOU_POOLED",
                 help="two-class mIoU pooled over the dataset from per-sample counts (Chefer et al.'s code)")
METRICS.register("gini", "aft_bench.metrics.gini:GINI", help="Gini index of |map| (Hurley & Rickard 2009)")
METRICS.register("ssim", "aft_bench.metrics.ssim:SSIM", help="SSIM of min-max-normalised maps (scikit-image defaults)")
