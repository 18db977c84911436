"""Tiny random-weight segmenters of the real transformers architectures (CLIPSeg, SAM, SAM 2 and its
video model, SAM 3, SegFormer, Mask2Former, OneFormer, Grounding DINO), saved as folders Kiri's
catalog reads, like diffusers' get_dummy_components(). None needs torchvision."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tiny_models import _tokenizer


def _tiny_hiera_vision(fpn_hidden_size: int) -> dict:
    """SAM 2's vision config at 64 px: Hiera stages of 16, 8, 4 and 2 tokens a side (a global-attention
    block may not be a stage's first, query-pooling, block), an FPN of `fpn_hidden_size`."""
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=16, image_size=[64, 64], blocks_per_stage=[1, 1, 2, 1],
                    embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
                    window_size_per_stage=[8, 4, 4, 2], global_attention_blocks=[3],
                    window_positional_embedding_background_size=[4, 4])
    return dict(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
                backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]], fpn_hidden_size=fpn_hidden_size)


def make_tiny_clipseg(folder: Path) -> Path:
    """A CLIPSegForImageSegmentation folder (config, weights, processor and tokenizer) of random tiny weights."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessorPil

    tokenizer = _tokenizer()
    torch.manual_seed(0)
    config = CLIPSegConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                         num_hidden_layers=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3,
                           image_size=64, patch_size=16),
        projection_dim=32, reduce_dim=16, extract_layers=[1, 2], decoder_num_attention_heads=2, decoder_intermediate_size=32,
    )
    processor = CLIPSegProcessor(image_processor=ViTImageProcessorPil(size={"height": 64, "width": 64}, image_mean=[0.5] * 3,
                                                                      image_std=[0.5] * 3), tokenizer=tokenizer)
    CLIPSegForImageSegmentation(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_tiny_sam2_video(folder: Path) -> Path:
    """A Sam2VideoModel folder (SAM 2 with memory: it tracks through a clip), random tiny weights. The
    memory attention's key width is fixed at 64 in transformers, and the object pointers are split
    into memory-width pieces, so the mask decoder is 128 wide here."""
    import transformers

    torch.manual_seed(0)
    config = transformers.Sam2VideoConfig(
        vision_config=_tiny_hiera_vision(fpn_hidden_size=128),
        prompt_encoder_config=dict(hidden_size=128, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=32),
        image_size=64, memory_attention_hidden_size=128, memory_encoder_hidden_size=128, memory_encoder_output_channels=64,
        memory_attention_num_layers=1, memory_fuser_intermediate_dim=64, memory_fuser_embed_dim=128,
        mask_downsampler_embed_dim=128, num_maskmem=2, memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[4, 4],
    )
    transformers.Sam2VideoModel(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Sam2ImageProcessorFast", "size": {"height": 64, "width": 64},
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    return folder


def make_tiny_sam(folder: Path, version: int = 1) -> Path:
    """A SamModel (version 1, with its processor), Sam2Model (2) or Sam3Model (3, with its tokenizer)
    folder with its preprocessor_config.json, random tiny weights."""
    import transformers

    torch.manual_seed(0)
    if version == 1:
        config = transformers.SamConfig(
            vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, output_channels=32,
                               image_size=64, patch_size=8, global_attn_indexes=[1], window_size=4, num_pos_feats=16),
            prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8, mask_input_channels=4),
            mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                     iou_head_hidden_dim=32),
        )
        model = transformers.SamModel(config)
        processor = transformers.SamProcessor(image_processor=transformers.SamImageProcessorPil(
            size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}, mask_size={"longest_edge": 16},
            mask_pad_size={"height": 16, "width": 16}))
    elif version == 2:
        config = transformers.Sam2Config(
            vision_config=_tiny_hiera_vision(fpn_hidden_size=32),
            prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=16, mask_input_channels=4),
            mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                     iou_head_hidden_dim=32),
        )
        model = transformers.Sam2Model(config)
        model.save_pretrained(folder)
        # What facebook/sam2.1-* folders hold; Sam2Processor itself needs torchvision to be built.
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "Sam2ImageProcessorFast", "processor_class": "Sam2Processor",
            "size": {"height": 64, "width": 64}, "mask_size": {"height": 16, "width": 16},
            "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "do_resize": True,
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True}))
        return folder
    elif version == 3:
        # A 56 px ViT in 14 px patches (4x4 tokens), one-layer DETR encoder and decoder of 8 queries,
        # the tiny CLIP tokenizer's text tower.
        tokenizer = _tokenizer()
        vit = dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=2, image_size=56, patch_size=14, window_size=2, global_attn_indexes=[1],
                   pretrain_image_size=56)
        small = dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64)
        config = transformers.Sam3Config(
            vision_config=dict(backbone_config=vit, fpn_hidden_size=32, backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]]),
            text_config=dict(model_type="clip_text_model", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                             num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32, projection_dim=32,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id),
            geometry_encoder_config=small, detr_encoder_config=small,
            detr_decoder_config={**small, "num_queries": 8},
            mask_decoder_config=dict(hidden_size=32, num_upsampling_stages=2, num_attention_heads=2),
        )
        transformers.Sam3Model(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "preprocessor_config.json").write_text(json.dumps({  # as facebook/sam3's, at 56 px
            "image_processor_type": "Sam3ImageProcessorFast", "processor_class": "Sam3Processor",
            "size": {"height": 56, "width": 56}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True}))
        return folder
    else:
        raise ValueError(f"no tiny SAM {version}")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_tiny_segformer(folder: Path) -> Path:
    """A SegformerForSemanticSegmentation folder of three classes, random tiny weights."""
    import transformers

    torch.manual_seed(0)
    labels = {0: "background", 1: "circle", 2: "star"}
    config = transformers.SegformerConfig(
        num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32, num_labels=3,
        id2label=labels, label2id={v: k for k, v in labels.items()},
    )
    transformers.SegformerForSemanticSegmentation(config).save_pretrained(folder)
    transformers.SegformerImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(folder)


def make_tiny_mask2former(folder: Path) -> Path:
    """A Mask2FormerForUniversalSegmentation folder (tiny Swin backbone, one query so that random masks cannot overlap, two classes), random
    weights, with the PIL image processor (the default one needs torchvision)."""
    import transformers

    torch.manual_seed(0)
    labels = {0: "circle", 1: "star"}
    backbone = transformers.SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                                       window_size=2, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64,
        dim_feedforward=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2, num_queries=1, common_stride=4,
        id2label=labels, label2id={v: k for k, v in labels.items()}, use_pretrained_backbone=False,
    )
    model = transformers.Mask2FormerForUniversalSegmentation(config)
    with torch.no_grad():
        # Random weights give every query a class score near 0.5 and mask logits near 0, and
        # transformers weighs the masks by the score before its 0.5 test, so nothing would come out:
        # make "circle" sure and the masks sharp.
        model.class_predictor.bias[0] = 10.0
        model.class_predictor.bias[-1] = -10.0
        last = model.model.transformer_module.decoder.mask_predictor.mask_embedder.get_submodule("2.0")
        last.weight.mul_(200.0)
    model.save_pretrained(folder)
    transformers.Mask2FormerImageProcessorPil(size={"height": 64, "width": 64}, size_divisor=32).save_pretrained(folder)
    return folder


def make_tiny_oneformer(folder: Path) -> Path:
    """A OneFormerForUniversalSegmentation folder (tiny Swin backbone, tiny text encoder, two queries, two
    classes) with its processor (PIL image processor, the tiny CLIP tokenizer); its config names a
    class-info file on the hub that the folder lacks, as shi-labs' folders do."""
    import transformers

    torch.manual_seed(0)
    labels = {0: "circle", 1: "star"}
    backbone = transformers.SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                                       window_size=2, out_features=["stage1", "stage2", "stage3", "stage4"])
    tokenizer = _tokenizer()
    config = transformers.OneFormerConfig(
        backbone_config=backbone, num_queries=2, task_seq_len=16, text_encoder_width=32, text_encoder_context_length=16,
        text_encoder_num_layers=1, text_encoder_vocab_size=len(tokenizer), text_encoder_proj_layers=1, text_encoder_n_ctx=4,
        conv_dim=32, mask_dim=32, hidden_dim=32, encoder_feedforward_dim=64, encoder_layers=1, decoder_layers=2,
        num_attention_heads=2, dim_feedforward=64, query_dec_layers=1, id2label=labels,
        label2id={v: k for k, v in labels.items()}, use_pretrained_backbone=False, is_training=False,
    )
    model = transformers.OneFormerForUniversalSegmentation(config)
    with torch.no_grad():  # as for the tiny Mask2Former: one sure class, sharp masks
        head = next(m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == len(labels) + 1)
        head.bias[0], head.bias[-1] = 10.0, -10.0
        for name, module in model.named_modules():
            if name.endswith("mask_embed.layers.2.0"):
                module.weight.mul_(200.0)
    model.save_pretrained(folder)
    image_processor = transformers.OneFormerImageProcessorPil(size={"height": 64, "width": 64}, class_info_file=None,
                                                              num_text=2, do_reduce_labels=False)
    transformers.OneFormerProcessor(image_processor=image_processor, tokenizer=tokenizer, max_seq_length=16,
                                    task_seq_length=16).save_pretrained(folder)
    config_path = folder / "processor_config.json"
    saved = json.loads(config_path.read_text())
    saved["image_processor"]["class_info_file"] = "ade20k_panoptic.json"  # on the hub, not in the folder
    config_path.write_text(json.dumps(saved))
    return folder


def make_tiny_grounding_dino(folder: Path) -> Path:
    """A GroundingDinoForObjectDetection folder (tiny Swin backbone, tiny BERT over a word list), random
    weights, with its processor (PIL image processor)."""
    import transformers
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "the", "a", "red", "blue", "circle", "square", "star", "sky"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"))
    config = transformers.GroundingDinoConfig(
        backbone_config=dict(model_type="swin", image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                             num_heads=[1, 1, 1, 1], window_size=2, out_features=["stage2", "stage3", "stage4"]),
        text_config=dict(model_type="bert", vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=10, num_feature_levels=4, encoder_n_points=2,
        decoder_n_points=2, max_text_len=32,
    )
    transformers.GroundingDinoForObjectDetection(config).save_pretrained(folder)
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96})
    transformers.GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
