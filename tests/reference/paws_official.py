"""The pieces of the official PAWS code (facebookresearch/suncet: src/losses.py,
src/wide_resnet.py, src/resnet.py, src/paws_train.py's init_model / init_opt, src/sgd.py, src/lars.py,
src/utils.py's WarmupCosineSchedule) that the PAWS reference scripts share, written from the
official code for one process (no torch.distributed; AllGather / AllReduce are the identity
there). Used by make_paws_fixtures.py and bench/paws_reference_train.py."""

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


# -- src/losses.py ------------------------------------------------------------------------------

def init_paws_loss(multicrop=6, tau=0.1, T=0.25, me_max=True):
    softmax = torch.nn.Softmax(dim=1)

    def sharpen(p):
        sharp_p = p ** (1. / T)
        sharp_p /= torch.sum(sharp_p, dim=1, keepdim=True)
        return sharp_p

    def snn(query, supports, labels):
        query = torch.nn.functional.normalize(query)
        supports = torch.nn.functional.normalize(supports)
        return softmax(query @ supports.T / tau) @ labels

    def loss(anchor_views, anchor_supports, anchor_support_labels, target_views, target_supports,
             target_support_labels, sharpen=sharpen, snn=snn):
        batch_size = len(anchor_views) // (2 + multicrop)
        probs = snn(anchor_views, anchor_supports, anchor_support_labels)
        with torch.no_grad():
            targets = snn(target_views, target_supports, target_support_labels)
            targets = sharpen(targets)
            if multicrop > 0:
                mc_target = 0.5 * (targets[:batch_size] + targets[batch_size:])
                targets = torch.cat([targets, *[mc_target for _ in range(multicrop)]], dim=0)
            targets[targets < 1e-4] *= 0
        loss = torch.mean(torch.sum(torch.log(probs ** (-targets)), dim=1))
        rloss = 0.
        if me_max:
            avg_probs = torch.mean(sharpen(probs), dim=0)
            rloss -= torch.sum(torch.log(avg_probs ** (-avg_probs)))
        return loss, rloss

    return loss


def init_suncet_loss(num_classes, batch_size, temperature):
    """One process (world_size 1, rank 0): AllGather is the identity."""
    local_images = batch_size * num_classes
    diag_mask = torch.ones(local_images, local_images)
    for i in range(local_images):
        diag_mask[i, i] = 0.

    def contrastive_loss(z, labels):
        z = torch.nn.functional.normalize(z)
        exp_cs = torch.exp(z @ z.T / temperature) * diag_mask.to(z.dtype)
        probs = exp_cs.div(exp_cs.sum(dim=1, keepdim=True)) @ labels
        targets = labels[0:local_images]
        overlap = probs ** (-targets)
        return torch.mean(torch.sum(torch.log(overlap), dim=1))

    return contrastive_loss


def make_labels_matrix(num_classes, s_batch_size, smoothing=0.0):
    """One process, unique_classes=False."""
    off_value = smoothing / num_classes
    labels = torch.zeros(s_batch_size * num_classes, num_classes) + off_value
    for i in range(num_classes):
        labels[i::num_classes][:, i] = 1. - smoothing + off_value
    return labels


# -- src/wide_resnet.py -------------------------------------------------------------------------

class WideBasicBlock(nn.Module):
    def __init__(self, in_planes, planes, dropout_rate, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=True)
        self.dropout = nn.Dropout(p=dropout_rate)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=True))

    def forward(self, x):
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        out += self.shortcut(x)
        return out


class WideResNet(nn.Module):
    def __init__(self, depth, widen_factor, dropout_rate=0.0):
        super().__init__()
        self.in_planes = 16
        assert (depth - 4) % 6 == 0
        n = (depth - 4) / 6
        k = widen_factor
        stages = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(3, stages[0], kernel_size=3, stride=1, padding=1, bias=True)
        self.layer1 = self._wide_layer(stages[1], n, dropout_rate, stride=1)
        self.layer2 = self._wide_layer(stages[2], n, dropout_rate, stride=2)
        self.layer3 = self._wide_layer(stages[3], n, dropout_rate, stride=2)
        self.bn1 = nn.BatchNorm2d(stages[3], momentum=0.99)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = None
        self.pred = None

    def _wide_layer(self, planes, num_blocks, dropout_rate, stride):
        strides = [stride] + [1] * (int(num_blocks) - 1)
        layers = []
        for stride in strides:
            layers.append(WideBasicBlock(self.in_planes, planes, dropout_rate, stride))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def _forward_backbone(self, x):
        x = self.conv1(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = F.relu(self.bn1(x))
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        if self.fc is not None:
            x = self.fc(x)
        return x

    def _forward_head(self, x):
        if self.pred is not None:
            x = self.pred(x)
        return x

    def forward(self, inputs, return_before_head=False):
        if not isinstance(inputs, list):
            inputs = [inputs]
        idx_crops = torch.cumsum(torch.unique_consecutive(
            torch.tensor([inp.shape[-1] for inp in inputs]), return_counts=True)[1], 0)
        start_idx = 0
        for end_idx in idx_crops:
            _h = self._forward_backbone(torch.cat(inputs[start_idx:end_idx]))
            _z = self._forward_head(_h)
            if start_idx == 0:
                h, z = _h, _z
            else:
                h, z = torch.cat((h, _h)), torch.cat((z, _z))
            start_idx = end_idx
        if return_before_head:
            return h, z
        return z


# -- src/resnet.py ------------------------------------------------------------------------------

def conv3x3(in_planes, out_planes, stride=1, groups=1, dilation=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, groups=groups,
                     bias=False, dilation=dilation)


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                 norm_layer=None):
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                 norm_layer=None):
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, layers, zero_init_residual=False, groups=1, widen=1, width_per_group=64,
                 norm_layer=None, use_maxpool=True):
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        self._norm_layer = norm_layer
        self.use_maxpool = use_maxpool
        self.inplanes = width_per_group * widen
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        num_out_filters = width_per_group * widen
        self.conv1 = nn.Conv2d(3, num_out_filters, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(num_out_filters)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, num_out_filters, layers[0])
        num_out_filters *= 2
        self.layer2 = self._make_layer(block, num_out_filters, layers[1], stride=2)
        num_out_filters *= 2
        self.layer3 = self._make_layer(block, num_out_filters, layers[2], stride=2)
        num_out_filters *= 2
        self.layer4 = self._make_layer(block, num_out_filters, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = None
        self.pred = None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes, blocks, stride=1):
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       norm_layer(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width,
                        previous_dilation, norm_layer)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                                dilation=self.dilation, norm_layer=norm_layer))
        return nn.Sequential(*layers)

    def _forward_backbone(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        if self.use_maxpool:
            x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        if self.fc is not None:
            x = self.fc(x)
        return x

    _forward_head = WideResNet._forward_head
    forward = WideResNet.forward


def resnet50(**kwargs):
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


# -- src/paws_train.py --------------------------------------------------------------------------

def init_model(depth=28, widen=2, use_pred=False, output_dim=128, model_name='wide_resnet',
               width_per_group=64, layers=(3, 4, 6, 3)):
    """init_model for a Wide ResNet of `depth` and `widen`, or for a bottleneck ResNet of
    `layers` blocks per stage (resnet50: 3, 4, 6, 3) and `width_per_group` (64 officially).
    The hidden width is the backbone's feature width: the official code hard-codes it (128 for
    WRN-28-2, 2048 for ResNet-50), the same for every released model."""
    if model_name == 'resnet':
        encoder = ResNet(Bottleneck, list(layers), width_per_group=width_per_group)
        hidden_dim = 32 * width_per_group
    else:
        encoder = WideResNet(depth, widen, dropout_rate=0.0)
        hidden_dim = 64 * widen
    encoder.fc = torch.nn.Sequential(OrderedDict([
        ('fc1', torch.nn.Linear(hidden_dim, hidden_dim)),
        ('bn1', torch.nn.BatchNorm1d(hidden_dim)),
        ('relu1', torch.nn.ReLU(inplace=True)),
        ('fc2', torch.nn.Linear(hidden_dim, hidden_dim)),
        ('bn2', torch.nn.BatchNorm1d(hidden_dim)),
        ('relu2', torch.nn.ReLU(inplace=True)),
        ('fc3', torch.nn.Linear(hidden_dim, output_dim))
    ]))
    encoder.pred = None
    if use_pred:
        mx = 4
        pred_head = OrderedDict([])
        pred_head['bn1'] = torch.nn.BatchNorm1d(output_dim)
        pred_head['fc1'] = torch.nn.Linear(output_dim, output_dim // mx)
        pred_head['bn2'] = torch.nn.BatchNorm1d(output_dim // mx)
        pred_head['relu'] = torch.nn.ReLU(inplace=True)
        pred_head['fc2'] = torch.nn.Linear(output_dim // mx, output_dim)
        encoder.pred = torch.nn.Sequential(pred_head)
    return encoder


def init_opt(encoder, iterations_per_epoch, start_lr, ref_lr, ref_mom, nesterov, warmup, num_epochs,
             weight_decay=1e-6, final_lr=0.0):
    param_groups = [
        {'params': (p for n, p in encoder.named_parameters() if ('bias' not in n) and ('bn' not in n))},
        {'params': (p for n, p in encoder.named_parameters() if ('bias' in n) or ('bn' in n)),
         'LARS_exclude': True, 'weight_decay': 0}
    ]
    optimizer = SGD(param_groups, weight_decay=weight_decay, momentum=0.9, nesterov=nesterov, lr=ref_lr)
    scheduler = WarmupCosineSchedule(optimizer, warmup_steps=warmup * iterations_per_epoch, start_lr=start_lr,
                                     ref_lr=ref_lr, final_lr=final_lr, T_max=num_epochs * iterations_per_epoch)
    optimizer = LARS(optimizer, trust_coefficient=0.001)
    return encoder, optimizer, scheduler


def paws_step(encoder, optimizer, scheduler, paws, imgs, labels, num_support, u_batch_size):
    """One iteration of paws_train.py's train_step (fp32)."""
    optimizer.zero_grad()
    h, z = encoder(imgs, return_before_head=True)
    anchor_supports = z[:num_support]
    anchor_views = z[num_support:]
    target_supports = h[:num_support].detach()
    target_views = h[num_support:].detach()
    target_views = torch.cat([target_views[u_batch_size:2 * u_batch_size], target_views[:u_batch_size]], dim=0)
    ploss, me_max = paws(anchor_views=anchor_views, anchor_supports=anchor_supports, anchor_support_labels=labels,
                         target_views=target_views, target_supports=target_supports, target_support_labels=labels)
    loss = ploss + me_max
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss, ploss, me_max, h, z


# -- src/sgd.py, src/lars.py --------------------------------------------------------------------

class SGD(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum=0, weight_decay=0, nesterov=False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            weight_decay = group['weight_decay']
            momentum = group['momentum']
            nesterov = group['nesterov']
            for p in group['params']:
                if p.grad is None:
                    continue
                d_p = p.grad
                if weight_decay != 0:
                    d_p = d_p.add(p, alpha=weight_decay)
                d_p.mul_(-group['lr'])
                if momentum != 0:
                    param_state = self.state[p]
                    if 'momentum_buffer' not in param_state:
                        buf = param_state['momentum_buffer'] = d_p.clone().detach()
                    else:
                        buf = param_state['momentum_buffer']
                        buf.mul_(momentum).add_(d_p)
                    if nesterov:
                        d_p = d_p.add(buf, alpha=momentum)
                    else:
                        d_p = buf
                p.add_(d_p)


class LARS(torch.optim.Optimizer):
    def __init__(self, optimizer, trust_coefficient=0.02, eps=1e-8):
        self.optim = optimizer
        self.trust_coefficient = trust_coefficient
        self.eps = eps

    @property
    def state(self):
        return self.optim.state

    @property
    def param_groups(self):
        return self.optim.param_groups

    def zero_grad(self):
        self.optim.zero_grad()

    def step(self):
        with torch.no_grad():
            weight_decays = []
            for group in self.optim.param_groups:
                weight_decay = group['weight_decay'] if 'weight_decay' in group else 0
                weight_decays.append(weight_decay)
                if ('LARS_exclude' in group) and group['LARS_exclude']:
                    continue
                group['weight_decay'] = 0
                for p in group['params']:
                    if p.grad is None:
                        continue
                    param_norm = torch.norm(p.data)
                    grad_norm = torch.norm(p.grad.data)
                    if param_norm != 0 and grad_norm != 0:
                        adaptive_lr = self.trust_coefficient * param_norm / (
                            grad_norm + param_norm * weight_decay + self.eps)
                        p.grad.data += weight_decay * p.data
                        p.grad.data *= adaptive_lr
        self.optim.step()
        for i, group in enumerate(self.optim.param_groups):
            group['weight_decay'] = weight_decays[i]


# -- src/utils.py -------------------------------------------------------------------------------

class WarmupCosineSchedule(torch.optim.lr_scheduler.LambdaLR):
    def __init__(self, optimizer, warmup_steps, start_lr, ref_lr, T_max, last_epoch=-1, final_lr=0.):
        self.start_lr = start_lr
        self.ref_lr = ref_lr
        self.final_lr = final_lr
        self.warmup_steps = warmup_steps
        self.T_max = T_max - warmup_steps
        super().__init__(optimizer, self.lr_lambda, last_epoch=last_epoch)

    def lr_lambda(self, step):
        if step < self.warmup_steps:
            progress = float(step) / float(max(1, self.warmup_steps))
            new_lr = self.start_lr + progress * (self.ref_lr - self.start_lr)
            return new_lr / self.ref_lr
        progress = float(step - self.warmup_steps) / float(max(1, self.T_max))
        new_lr = max(self.final_lr,
                     self.final_lr + (self.ref_lr - self.final_lr) * 0.5 * (1. + math.cos(math.pi * progress)))
        return new_lr / self.ref_lr
